"""One restart back-off for every kind of child, with explicit times."""

from __future__ import annotations

from supervisor.backoff import MAX_DELAY, QUICK_DEATH_SECONDS, Backoff


def deaths(backoff: Backoff, count: int, lived: float = 1.0) -> list[float]:
    delays, now = [], 1000.0
    for _ in range(count):
        delays.append(backoff.died(started=now - lived, now=now))
        now += 60
    return delays


def test_quick_deaths_wait_0_then_1_2_4_seconds_up_to_30_and_a_long_life_starts_afresh() -> None:
    backoff = Backoff()
    assert deaths(backoff, 8) == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, MAX_DELAY, MAX_DELAY]
    assert deaths(backoff, 1, lived=QUICK_DEATH_SECONDS) == [0.0]
    assert deaths(backoff, 2) == [0.0, 1.0]
    assert backoff.died(started=0.0, now=1.0, clean=True) == 0.0
    assert deaths(backoff, 1) == [0.0]
    assert len(deaths(backoff, 2000)) == 2000  # no overflow in a long crash loop


def test_a_start_waits_for_the_delay_but_a_long_life_does_not_cancel_a_pending_one() -> None:
    backoff = Backoff()
    backoff.died(started=99.0, now=100.0)
    assert backoff.died(started=100.0, now=101.0) == 1.0
    assert not backoff.allows(101.5) and backoff.allows(102.0)
    # HTTP workers share one back-off: an old worker's death resets the count, not the wait
    assert backoff.died(started=0.0, now=101.2) == 0.0
    assert not backoff.allows(101.5)

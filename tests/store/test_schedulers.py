"""Job schedulers in the store, with explicit server times: one job per due time whichever
nodes tick and however often, cron in a time zone across daylight-saving changes, missed
runs, start and end, and a scheduler changed while a node fires it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st_

from jobs import registry
from jobs.queue import define_scheduler
from jobs.schedule import MISSED_AFTER_MS, Scheduler, tick
from jobs.settings import Settings
from jobs.store import Keys, Shared, SyncStore, calls

S = Settings(pools={"p": 1}, key_prefix="sc", keep_result_seconds=600, backlog_limit=500)
K = Keys(S.pool_prefix("p"))
G = Shared(S.prefix)
T0 = 1_800_000_000_000  # 2027-01-15T08:00:00Z, a whole minute


def ms(text: str) -> int:
    return round(datetime.fromisoformat(text).astimezone(UTC).timestamp() * 1000)


@pytest.fixture(autouse=True)
def jobs_loaded() -> None:
    registry.load()


@pytest.fixture
def st(store: redis.Redis) -> SyncStore:
    return SyncStore(store, S)


def put(st: SyncStore, now: int, scheduler_id: str = "s", **timing: Any) -> Scheduler:
    scheduler = define_scheduler(
        S, scheduler_id, "noop", {"n": 1}, options={"queue": "p"}, **timing
    )
    due = None if scheduler.paused else scheduler.after(now)
    st.run(
        calls.put_scheduler(
            G, scheduler_id=scheduler_id, definition=scheduler.stored(), next_due=due, now=now
        )
    )
    return scheduler


def next_due(store: redis.Redis, scheduler_id: str = "s") -> int | None:
    score = store.zscore(G.schedule, scheduler_id)
    return None if score is None else int(score)


def test_each_due_time_makes_one_job_however_many_nodes_tick_and_however_often(
    store: redis.Redis, st: SyncStore
) -> None:
    put(st, T0, every=60)
    assert next_due(store) == T0 + 60_000
    assert tick(st, T0 + 59_999) == []  # not yet
    made = [tick(st, T0 + 60_000), tick(st, T0 + 60_000), tick(SyncStore(store, S), T0 + 60_001)]
    assert made == [["s@1800000060000"], [], []]
    job = store.hgetall(K.job("s@1800000060000"))
    assert (job["status"], job["name"], job["pool"], job["data"]) == (
        "queued",
        "noop",
        "p",
        '{"n":1}',
    )
    assert job["scheduler"] == "s"
    assert store.zscore(K.delayed("p"), "s@1800000060000") == T0 + 60_000  # any consumer claims it
    assert next_due(store) == T0 + 120_000
    st.run(calls.register(K, S, cid="c", pool="p", instance="i", info="{}", now=T0 + 60_002))
    claimed = st.run(calls.claim(K, S, cid="c", pool="p", instance="i", n=8, now=T0 + 60_003))
    assert [t.id for t in claimed.tries] == ["s@1800000060000"]


def test_two_nodes_that_read_the_same_due_time_make_one_job(
    store: redis.Redis, st: SyncStore
) -> None:
    job = json.dumps(put(st, T0, every=60).job)
    due = T0 + 60_000
    for now in (due, due + 5):  # two nodes, one after the other, each makes then moves on
        st.run(calls.fire(K, scheduler_id="s", job_id=f"s@{due}", job=job, now=now))
    assert store.zcard(K.index()) == 1
    moved = [
        st.run(calls.advance(G, scheduler_id="s", due=due, next_due=due + 60_000, now=now))
        for now in (due, due + 5)
    ]
    assert moved == [True, False]  # the other node moved it on first
    assert next_due(store) == due + 60_000


def test_a_job_of_a_due_time_is_made_once_even_if_the_scheduler_is_rewound(
    store: redis.Redis, st: SyncStore
) -> None:
    """A retried step that finds the due time again (say, a scheduler put back) does not make
    its job twice: the job id is the scheduler's and the due time's."""
    put(st, T0, every=60)
    assert tick(st, T0 + 60_000) == ["s@1800000060000"]
    st.run(calls.put_scheduler(G, scheduler_id="s", definition=store.hget(G.schedulers, "s"),
                               next_due=T0 + 60_000, now=T0 + 60_001))  # fmt: skip
    assert tick(st, T0 + 60_002) == []
    assert store.zcard(K.index()) == 1
    assert next_due(store) == T0 + 120_000


def test_a_scheduler_changed_or_deleted_while_a_node_fires_it_is_left_as_it_is(
    store: redis.Redis, st: SyncStore
) -> None:
    put(st, T0, every=60)
    put(st, T0 + 10, every=30)  # changed: due at T0 + 30 s now
    stale = calls.advance(G, scheduler_id="s", due=T0 + 60_000, next_due=1, now=T0)
    assert st.run(stale) is False
    assert next_due(store) == T0 + 30_000
    assert st.run(calls.delete_scheduler(G, scheduler_id="s", now=T0))
    assert tick(st, T0 + 30_000) == [] and store.exists(G.schedulers) == 0
    assert not st.run(calls.delete_scheduler(G, scheduler_id="s", now=T0))


def test_a_cron_in_paris_runs_at_paris_times_across_both_daylight_saving_changes(
    store: redis.Redis, st: SyncStore
) -> None:
    """Spring forward (2027-03-28, 02:00 -> 03:00) and fall back (2027-10-31, 03:00 -> 02:00):
    a daily 02:30 runs once each day (at 03:00 when 02:30 does not exist, in the first of two
    02:30s); an hourly :30 runs every real hour, both 02:30s included."""
    daily = put(st, ms("2027-03-27T12:00:00+01:00"), "daily", cron="30 2 * * *", tz="Europe/Paris")
    assert daily.next_runs(ms("2027-03-27T12:00:00+01:00"), 3) == [
        ms("2027-03-28T01:00:00Z"),  # 03:00 CEST: the day's 02:30 did not exist
        ms("2027-03-29T00:30:00Z"),  # 02:30 CEST
        ms("2027-03-30T00:30:00Z"),
    ]
    assert daily.next_runs(ms("2027-10-30T12:00:00+02:00"), 2) == [
        ms("2027-10-31T00:30:00Z"),  # the first 02:30 (CEST); not the second (CET)
        ms("2027-11-01T01:30:00Z"),  # 02:30 CET
    ]
    hourly = put(st, ms("2027-10-31T00:00:00Z"), "hourly", cron="30 * * * *", tz="Europe/Paris")
    # the store follows the same times, one job each, ticked at each due time
    made = [
        job
        for at in ("2027-10-31T00:30:00Z", "2027-10-31T01:30:00Z", "2027-10-31T02:30:00Z")
        for job in tick(st, ms(at))
    ]
    assert made == [
        f"hourly@{ms('2027-10-31T00:30:00Z')}",  # 02:30 CEST
        f"hourly@{ms('2027-10-31T01:30:00Z')}",  # 02:30 CET: the same wall-clock time again
        f"hourly@{ms('2027-10-31T02:30:00Z')}",  # 03:30 CET
    ]
    assert hourly.after(ms("2027-10-31T02:30:00Z")) == ms("2027-10-31T03:30:00Z")


@pytest.mark.parametrize("missed", ["skip", "once"])
def test_runs_missed_while_nothing_ran_are_skipped_or_run_once(
    store: redis.Redis, st: SyncStore, missed: str
) -> None:
    put(st, T0, every=60, missed=missed)
    later = T0 + 3_600_000 + 30_000  # an hour of due times missed, the last 30 s ago
    made = tick(st, later)
    assert made == ([] if missed == "skip" else ["s@1800000060000"])
    assert next_due(store) == T0 + 3_660_000  # the first due time after now, not the next missed
    assert tick(st, later + 1) == []


def test_a_due_time_a_little_late_still_runs_when_missed_runs_are_skipped(
    store: redis.Redis, st: SyncStore
) -> None:
    put(st, T0, every=600)
    assert tick(st, T0 + 600_000 + MISSED_AFTER_MS) == ["s@1800000600000"]


def test_a_scheduler_starts_at_its_start_and_stops_after_its_end(
    store: redis.Redis, st: SyncStore
) -> None:
    start, end = "2027-01-15T09:00:00Z", "2027-01-15T09:02:00Z"
    put(st, T0, every=60, start=start, end=end)
    assert next_due(store) == ms(start)
    made = [job for at in (0, 60_000, 120_000, 180_000) for job in tick(st, ms(start) + at)]
    assert made == [f"s@{ms(start) + d}" for d in (0, 60_000, 120_000)]
    assert next_due(store) is None  # ended: it runs no more, its definition stays
    assert store.hexists(G.schedulers, "s")


def test_a_paused_scheduler_makes_no_job(store: redis.Redis, st: SyncStore) -> None:
    put(st, T0, every=60, paused=True)
    assert next_due(store) is None
    assert tick(st, T0 + 600_000) == []


@settings(max_examples=40, deadline=None)
@given(
    every=st_.integers(1, 90),
    steps=st_.lists(st_.tuples(st_.integers(0, 1), st_.integers(0, 90_000)), max_size=30),
)
def test_ticks_of_two_nodes_at_any_times_make_each_job_once_and_never_early(
    valkey: Any, every: int, steps: list[tuple[int, int]]
) -> None:
    """Two nodes tick at random moments (the clock never goes back): no due time makes two
    jobs, no job is made before its due time, and while no tick comes more than
    MISSED_AFTER_MS after the one before, every due time makes its job."""
    client = valkey.client()
    try:
        client.flushall()
        nodes = [SyncStore(client, S), SyncStore(client, S)]
        put(nodes[0], T0, every=every)
        now, made, gaps_ok = T0, [], True
        for node, step in steps:
            gaps_ok = gaps_ok and step <= MISSED_AFTER_MS
            now += step
            made += [(job, now) for job in tick(nodes[node], now)]
        dues = [int(job.split("@")[1]) for job, _ in made]
        assert len(set(dues)) == len(dues) and dues == sorted(dues)
        assert all(due <= at for due, (_, at) in zip(dues, made, strict=True))
        step = every * 1000
        assert all(due % step == 0 for due in dues)  # whole intervals since the epoch
        if gaps_ok:
            assert dues == list(range((T0 // step + 1) * step, now + 1, step))
    finally:
        client.close()

"""Groups (options.group) in the store, with explicit server times: the pool serves its groups
in turn, so a busy one cannot starve a quiet one, and each group keeps its own rate limit and
concurrency cap; a retried or cancelled job of a group keeps to its group."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from jobs.settings import Settings
from jobs.store import Keys, SyncStore, Try, calls

T0 = 1_800_000_000_000
S = Settings(pools={"p": 1}, key_prefix="gr", keep_result_seconds=600, backlog_limit=500)
K = Keys(S.pool_prefix("p"))


@pytest.fixture
def st(store: redis.Redis) -> SyncStore:
    st = SyncStore(store, S)
    assert st.run(calls.register(K, S, cid="c", pool="p", instance="i", info="{}", now=T0)).ok
    return st


def enqueue(st: SyncStore, job_id: str, group: str | None, now: int = T0) -> None:
    written = st.run(
        calls.enqueue(K, S, job_id=job_id, name="noop", pool="p", data="{}", delay_ms=0,
                      priority=0, attempts=2, timeout=30.0, backoff='{"type":"fixed","delay":1}',
                      group=group, now=now)
    )  # fmt: skip
    assert written.outcome == "created", written


def claim(st: SyncStore, now: int, n: int = 8) -> tuple[list[Try], float | None]:
    st.run(calls.heartbeat(K, S, cid="c", pool="p", instance="i", now=now))
    c = st.run(calls.claim(K, S, cid="c", pool="p", instance="i", n=n, now=now))
    assert c.state == "ok", c
    return c.tries, c.next_due


def finish(st: SyncStore, job: Try, now: int, outcome: str = "completed", **kw: Any) -> None:
    st.run(
        calls.finish(K, S, job_id=job.id, cid="c", pool="p", token=job.token, outcome=outcome,
                     payload="null", now=now, **kw)
    )  # fmt: skip


def limits(st: SyncStore, value: dict[str, Any]) -> None:
    st.run(calls.control(K, pool="p", what="limits", limits=value, now=T0))


def test_a_quiet_group_is_served_in_turn_with_a_busy_one_not_after_it(st: SyncStore) -> None:
    for i in range(10):
        enqueue(st, f"busy{i}", "busy")
    enqueue(st, "quiet0", "quiet")
    enqueue(st, "quiet1", "quiet")
    tries, _ = claim(st, T0 + 1, n=4)
    assert [t.id for t in tries] == ["busy0", "quiet0", "busy1", "quiet1"]
    tries, _ = claim(st, T0 + 2, n=3)
    assert [t.id for t in tries] == ["busy2", "busy3", "busy4"]  # the quiet one has no more


def test_jobs_without_a_group_still_run_beside_the_groups(st: SyncStore) -> None:
    enqueue(st, "g0", "g")
    enqueue(st, "plain", None)
    tries, _ = claim(st, T0 + 1)
    assert sorted(t.id for t in tries) == ["g0", "plain"]


def test_each_group_has_its_own_concurrency_cap(store: redis.Redis, st: SyncStore) -> None:
    limits(st, {"groups": {"concurrency": 1}})
    for g in ("a", "b"):
        for i in range(3):
            enqueue(st, f"{g}{i}", g)
    tries, _ = claim(st, T0 + 1)
    assert [t.id for t in tries] == ["a0", "b0"]  # one of each group at once
    assert claim(st, T0 + 2)[0] == []
    finish(st, tries[0], T0 + 3)
    assert store.lrange(K.wake("c"), 0, -1) == ["1"]  # the room is told at once
    assert [t.id for t in claim(st, T0 + 4)[0]] == ["a1"]
    assert store.hget(K.running("p"), "g:a") == "1" and store.hget(K.running("p"), "g:b") == "1"


def test_each_group_has_its_own_rate_limit_and_the_claim_says_when_it_opens(
    st: SyncStore,
) -> None:
    limits(st, {"groups": {"rate": {"max": 2, "period": 1}}})
    for g in ("a", "b"):
        for i in range(4):
            enqueue(st, f"{g}{i}", g)
    tries, next_due = claim(st, T0 + 100)
    assert sorted(t.id for t in tries) == ["a0", "a1", "b0", "b1"]
    for t in tries:
        finish(st, t, T0 + 101)
    tries, next_due = claim(st, T0 + 500)
    assert tries == [] and next_due == pytest.approx(0.6)  # the window opens at T0 + 1100
    tries, _ = claim(st, T0 + 1100)
    assert sorted(t.id for t in tries) == ["a2", "a3", "b2", "b3"]


def test_a_failed_try_of_a_group_is_retried_through_its_group_under_its_cap(
    store: redis.Redis, st: SyncStore
) -> None:
    limits(st, {"groups": {"concurrency": 1}})
    enqueue(st, "a0", "a")
    enqueue(st, "a1", "a")
    (first,), _ = claim(st, T0 + 1)
    finish(st, first, T0 + 2, outcome="failed", retry_delay=1.0)  # due again at T0 + 1002
    (second,), _ = claim(st, T0 + 3)
    assert second.id == "a1"
    assert claim(st, T0 + 1002)[0] == []  # due, but its group is at its cap
    assert store.zscore(K.group("p", "a"), "a0") is not None
    finish(st, second, T0 + 1003)
    assert [t.id for t in claim(st, T0 + 1004)[0]] == ["a0"]


def test_a_cancelled_job_of_a_group_leaves_its_group(store: redis.Redis, st: SyncStore) -> None:
    enqueue(st, "a0", "a")
    enqueue(st, "a1", "a")
    assert st.run(calls.cancel(K, S, job_id="a0", now=T0 + 1))[0] == "cancelled"
    assert store.get(K.grouped("p")) == "1"
    assert [t.id for t in claim(st, T0 + 2)[0]] == ["a1"]
    assert store.exists(K.group("p", "a"), K.groups("p")) == 0
    assert store.get(K.grouped("p")) == "0"

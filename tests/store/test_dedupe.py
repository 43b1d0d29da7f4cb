"""Deduplication in the enqueue script, with explicit server times: simple (while the key's job
waits or runs), throttle (one per ttl), debounce (the waiting job takes the newest data and
starts ttl after the last enqueue)."""

from __future__ import annotations

import pytest
import redis

from jobs.settings import Settings
from jobs.store import Keys, SyncStore, Try, Written, calls

T0 = 1_800_000_000_000
S = Settings(pools={"p": 1}, key_prefix="dd", keep_result_seconds=600, backlog_limit=500)
K = Keys(S.pool_prefix("p"))


@pytest.fixture
def st(store: redis.Redis) -> SyncStore:
    done = SyncStore(store, S).run(
        calls.register(K, S, cid="c", pool="p", instance="i", info="{}", now=T0)
    )
    assert done.ok
    return SyncStore(store, S)


def enqueue(
    st: SyncStore, job_id: str, now: int, mode: str, ttl_ms: int, data: str = "{}"
) -> Written:
    return st.run(
        calls.enqueue(K, S, job_id=job_id, name="noop", pool="p", data=data, delay_ms=0,
                      priority=0, attempts=3, timeout=30.0, backoff="{}",
                      dedupe=("k", mode, ttl_ms), now=now)
    )  # fmt: skip


def claim(st: SyncStore, now: int) -> list[Try]:
    # heartbeats keep the consumer live at any explicit time
    st.run(calls.heartbeat(K, S, cid="c", pool="p", instance="i", now=now))
    return st.run(calls.claim(K, S, cid="c", pool="p", instance="i", n=8, now=now)).tries


def finish(st: SyncStore, job: Try, now: int, outcome: str = "completed") -> None:
    st.run(
        calls.finish(K, S, job_id=job.id, cid="c", pool="p", token=job.token, outcome=outcome,
                     payload="null", now=now)
    )  # fmt: skip


def test_simple_makes_no_new_job_while_the_keys_job_waits_or_runs_then_lets_one(
    store: redis.Redis, st: SyncStore
) -> None:
    ttl = 3_600_000
    assert enqueue(st, "a", T0, "simple", ttl).outcome == "created"
    again = enqueue(st, "b", T0 + 1, "simple", ttl)
    assert (again.outcome, again.job_id, again.status) == ("deduplicated", "a", "queued")
    (running,) = claim(st, T0 + 2)
    assert enqueue(st, "c", T0 + 3, "simple", ttl).job_id == "a"  # running still counts
    finish(st, running, T0 + 4)
    assert store.exists(K.job("b"), K.job("c")) == 0
    assert store.exists(f"{K.prefix}:dedupe:p:k") == 0  # let go on finish
    assert enqueue(st, "d", T0 + 5, "simple", ttl).outcome == "created"


def test_simple_holds_at_most_its_ttl_and_a_cancelled_or_dead_job_lets_its_key_go(
    store: redis.Redis, st: SyncStore
) -> None:
    key = f"{K.prefix}:dedupe:p:k"
    assert enqueue(st, "a", T0, "simple", 60_000).outcome == "created"
    assert 0 < store.pttl(key) <= 60_000  # a job lost for good cannot hold its key for ever
    st.run(calls.cancel(K, S, job_id="a", now=T0 + 1))
    assert store.exists(key) == 0
    assert enqueue(st, "b", T0 + 2, "simple", 60_000).outcome == "created"
    (running,) = claim(st, T0 + 3)
    finish(st, running, T0 + 4, outcome="dead")
    assert store.hget(K.job("b"), "status") == "dead" and store.exists(key) == 0
    assert enqueue(st, "c", T0 + 5, "simple", 60_000).outcome == "created"
    # a finishing job that no longer holds the key (it expired, another took it) leaves it
    store.set(key, "someone-else")
    (running,) = claim(st, T0 + 6)
    finish(st, running, T0 + 7)
    assert store.get(key) == "someone-else"


def test_throttle_answers_the_first_job_for_its_whole_ttl_even_after_it_finished(
    store: redis.Redis, st: SyncStore
) -> None:
    assert enqueue(st, "a", T0, "throttle", 60_000).outcome == "created"
    (running,) = claim(st, T0 + 1)
    finish(st, running, T0 + 2)
    again = enqueue(st, "b", T0 + 3, "throttle", 60_000)
    assert (again.outcome, again.job_id) == ("deduplicated", "a")
    assert 0 < store.pttl(f"{K.prefix}:dedupe:p:k") <= 60_000  # then the next one may come


def test_debounce_keeps_one_waiting_job_with_the_newest_data_starting_ttl_after_the_last(
    store: redis.Redis, st: SyncStore
) -> None:
    first = enqueue(st, "a", T0, "debounce", 5000, data='{"v":1}')
    assert (first.outcome, first.status) == ("created", "delayed")
    assert store.zscore(K.delayed("p"), "a") == T0 + 5000
    for i, at in enumerate((T0 + 1000, T0 + 4000), start=2):
        again = enqueue(st, f"x{i}", at, "debounce", 5000, data=f'{{"v":{i}}}')
        assert (again.outcome, again.job_id, again.status) == ("deduplicated", "a", "delayed")
    assert store.hget(K.job("a"), "data") == '{"v":3}'
    assert store.zscore(K.delayed("p"), "a") == T0 + 9000  # ttl after the last enqueue
    assert claim(st, T0 + 8999) == []
    (running,) = claim(st, T0 + 9000)
    assert running.id == "a"
    # it runs: the next enqueue makes a new job, waiting ttl in its turn
    later = enqueue(st, "b", T0 + 9001, "debounce", 5000)
    assert (later.outcome, later.status) == ("created", "delayed")
    assert store.zcard(K.index()) == 2

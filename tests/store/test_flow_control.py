"""Flow control in the store, with explicit server times: pause and resume, a pool's rate limit
and concurrency cap, a job name's cap, and a job that asks for its pool to be rate limited."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from jobs.settings import Settings
from jobs.store import Keys, SyncStore, Try, calls

T0 = 1_800_000_000_000
S = Settings(pools={"p": 2}, key_prefix="fl", keep_result_seconds=600, backlog_limit=500)
K = Keys(S.pool_prefix("p"))


@pytest.fixture
def st(store: redis.Redis) -> SyncStore:
    return SyncStore(store, S)


def register(st: SyncStore, cid: str, now: int, caps: dict[str, int] | None = None) -> None:
    done = st.run(
        calls.register(K, S, cid=cid, pool="p", instance=f"i-{cid}", info="{}", caps=caps, now=now)
    )
    assert done.ok


def enqueue(st: SyncStore, job_id: str, now: int, name: str = "noop") -> None:
    written = st.run(
        calls.enqueue(K, S, job_id=job_id, name=name, pool="p", data="{}", delay_ms=0,
                      priority=0, attempts=3, timeout=30.0, backoff="{}", now=now)
    )  # fmt: skip
    assert written.outcome == "created", written


def claim(st: SyncStore, cid: str, now: int, n: int = 8) -> tuple[str, list[str], float | None]:
    c = st.run(calls.claim(K, S, cid=cid, pool="p", instance=f"i-{cid}", n=n, now=now))
    return c.state, [t.id for t in c.tries], c.next_due


def claimed(st: SyncStore, cid: str, now: int, n: int = 8) -> list[Try]:
    c = st.run(calls.claim(K, S, cid=cid, pool="p", instance=f"i-{cid}", n=n, now=now))
    assert c.state == "ok", c
    return c.tries


def finish(
    st: SyncStore, cid: str, job: Try, now: int, outcome: str = "completed", **kw: Any
) -> Any:
    return st.run(
        calls.finish(K, S, job_id=job.id, cid=cid, pool="p", token=job.token, outcome=outcome,
                     payload="null", now=now, **kw)
    )  # fmt: skip


def control(st: SyncStore, what: str, limits: dict[str, Any] | None = None, now: int = T0) -> Any:
    return st.run(calls.control(K, pool="p", what=what, limits=limits, now=now))


def test_a_paused_pool_takes_jobs_starts_none_and_resumes_for_every_consumer(
    store: redis.Redis, st: SyncStore
) -> None:
    register(st, "a", T0)
    assert control(st, "pause").paused
    enqueue(st, "j1", T0)  # a paused pool still accepts jobs
    register(st, "b", T0)  # a consumer that joins later is paused too
    assert claim(st, "a", T0 + 1)[:2] == ("paused", [])
    assert claim(st, "b", T0 + 1)[:2] == ("paused", [])
    state = control(st, "resume")
    assert not state.paused
    assert store.lrange(K.wake("a"), 0, -1) == ["1"]  # told at once, not at its next poll
    assert sum(len(claim(st, c, T0 + 2)[1]) for c in ("a", "b")) == 1
    # nothing left to enforce: the consumers' claims read no control key any more
    assert store.hget(K.worker("a"), "gate") is None and store.hget(K.worker("b"), "gate") is None


def test_a_pool_without_limits_never_reads_its_control_key(
    store: redis.Redis, st: SyncStore
) -> None:
    register(st, "a", T0)
    enqueue(st, "j1", T0)
    assert store.hget(K.worker("a"), "gate") is None
    assert not store.exists(K.control("p"))
    assert claim(st, "a", T0)[:2] == ("ok", ["j1"])
    assert not store.exists(K.running("p")) and not store.exists(K.starts("p"))


def test_a_rate_limit_lets_at_most_max_start_in_any_period(st: SyncStore) -> None:
    register(st, "a", T0)
    register(st, "b", T0)
    control(st, "limits", {"rate": {"max": 3, "period": 1}})
    for i in range(10):
        enqueue(st, f"j{i}", T0)
    starts: list[int] = []
    now = T0
    while len(starts) < 10 and now < T0 + 10_000:
        for cid in ("a", "b"):
            state, ids, due = claim(st, cid, now, n=2)
            starts += [now] * len(ids)
            if state == "limited":
                assert due is not None and 0 < due <= 1.0
        now += 100
    assert len(starts) == 10
    for t in starts:  # every window of one period holds at most 3 starts
        assert sum(1 for s in starts if t <= s < t + 1000) <= 3
    assert starts[-1] - starts[0] >= 3000  # and the limit did hold them back


def test_a_concurrency_cap_counts_running_tries_across_consumers(st: SyncStore) -> None:
    register(st, "a", T0)
    register(st, "b", T0)
    control(st, "limits", {"concurrency": 2})
    for i in range(5):
        enqueue(st, f"j{i}", T0)
    first = claimed(st, "a", T0, n=1)
    second = claimed(st, "b", T0, n=8)
    assert len(first) + len(second) == 2
    assert claim(st, "a", T0 + 1)[:2] == ("limited", [])
    finish(st, "a", first[0], T0 + 2)
    assert len(claimed(st, "a", T0 + 3)) == 1  # one ended: one more may start
    assert claim(st, "b", T0 + 4)[:2] == ("limited", [])


def test_a_job_name_at_its_cap_waits_parked_while_other_names_run(
    store: redis.Redis, st: SyncStore
) -> None:
    register(st, "a", T0, caps={"report": 1})  # @job(max_concurrency=1)
    for i in range(3):
        enqueue(st, f"r{i}", T0, name="report")
    enqueue(st, "n1", T0)
    running = claimed(st, "a", T0)
    assert sorted(t.id for t in running) == ["n1", "r0"]
    assert store.hget(K.job("r1"), "status") == "queued"
    assert store.hget(K.job("r1"), "waitingFor") == "the concurrency cap of report"
    assert store.zrange(K.parked("p", "report"), 0, -1) == ["r1", "r2"]
    # the API's cap for the name wins over the decorator's
    control(st, "limits", {"jobs": {"report": {"concurrency": 2}}})
    finish(st, "a", next(t for t in running if t.id == "r0"), T0 + 1)  # one ends: one goes back
    assert store.zrange(K.parked("p", "report"), 0, -1) == ["r2"]
    assert [t.id for t in claimed(st, "a", T0 + 2)] == ["r1"]
    assert store.hget(K.job("r1"), "waitingFor") is None
    assert store.hget(K.running("p"), "n:report") == "1"


def test_a_cancelled_parked_job_leaves_its_parking(store: redis.Redis, st: SyncStore) -> None:
    register(st, "a", T0, caps={"report": 1})
    enqueue(st, "r0", T0, name="report")
    enqueue(st, "r1", T0, name="report")
    claimed(st, "a", T0)
    assert st.run(calls.cancel(K, S, job_id="r1", now=T0 + 1))[0] == "cancelled"
    assert store.zcard(K.parked("p", "report")) == 0


def test_a_job_asking_to_be_rate_limited_holds_its_pool_and_is_not_a_try(
    store: redis.Redis, st: SyncStore
) -> None:
    register(st, "a", T0)
    enqueue(st, "j1", T0)
    enqueue(st, "j2", T0)
    (first, other) = claimed(st, "a", T0, n=2)
    done = finish(st, "a", first, T0 + 10, outcome="limited", retry_delay=2.0)
    assert done.status == "queued"
    job = store.hgetall(K.job(first.id))
    assert job["attempts"] == "0" and json.loads(job["tries"])[-1]["outcome"] == "rate limited"
    finish(st, "a", other, T0 + 20)
    state, ids, due = claim(st, "a", T0 + 1000)
    assert (state, ids) == ("limited", []) and due == pytest.approx(1.01)
    assert claim(st, "a", T0 + 2010)[:2] == ("ok", [first.id])

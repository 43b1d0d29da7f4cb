"""The store's scripts against a real Valkey, with explicit server times: each case that broke
the first promise ("a job that got a 2xx runs at least once, and never twice at once")."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from jobs.settings import Settings
from jobs.store import Keys, Outcome, Shared, SyncStore, Try, calls

T0 = 1_800_000_000_000  # ms: the tests' clock, far from the server's own
S = Settings(
    pools={"p": 2},
    key_prefix="st",
    heartbeat_interval=1.0,
    heartbeat_ttl=5.0,
    lease_seconds=10.0,
    keep_result_seconds=600,
    max_crashes=3,
    dlq_max=100,
    backlog_limit=50,
)
K = Keys(S.pool_prefix("p"))
G = Shared(S.prefix)


@pytest.fixture
def st(store: redis.Redis) -> SyncStore:
    return SyncStore(store, S)


def register(st: SyncStore, cid: str, now: int, instance: str | None = None) -> str:
    instance = instance or f"i-{cid}"
    done = st.run(calls.register(K, S, cid=cid, pool="p", instance=instance, info="{}", now=now))
    assert done.ok, done
    return instance


def beat(st: SyncStore, cid: str, now: int, running: list[Try] = ()) -> Any:  # type: ignore[assignment]
    return st.run(
        calls.heartbeat(
            K, S, cid=cid, pool="p", instance=f"i-{cid}",
            running=[(t.id, t.token) for t in running], now=now,
        )
    )  # fmt: skip


def enqueue(st: SyncStore, job_id: str, now: int, **extra: Any) -> Any:
    options: dict[str, Any] = {
        "name": "noop", "pool": "p", "data": "{}", "delay_ms": 0, "priority": 0,
        "attempts": 3, "timeout": 30.0, "backoff": json.dumps({"type": "fixed", "delay": 1}),
    }  # fmt: skip
    options.update(extra)
    return st.run(calls.enqueue(K, S, job_id=job_id, now=now, **options))


def claim(st: SyncStore, cid: str, now: int, n: int = 8) -> list[Try]:
    claimed = st.run(calls.claim(K, S, cid=cid, pool="p", instance=f"i-{cid}", n=n, now=now))
    assert claimed.state == "ok", claimed
    return claimed.tries


def finish(st: SyncStore, cid: str, job: Try, outcome: str, now: int, **extra: Any) -> Any:
    return st.run(
        calls.finish(K, S, job_id=job.id, cid=cid, pool="p", token=job.token, outcome=outcome,
                     now=now, **extra)
    )  # fmt: skip


def status(store: redis.Redis, job_id: str) -> str | None:
    value: str | None = store.hget(K.job(job_id), "status")
    return value


def places(store: redis.Redis, job_id: str) -> list[str]:
    """Every set of the life cycle the job is in (not the listing's indexes)."""
    found = []
    for key in store.scan_iter(f"{K.prefix}:*"):
        if key.startswith(K.index()) or key == K.expiring:
            continue
        kind = store.type(key)
        if kind == "zset" and store.zscore(key, job_id) is not None:
            found.append(key)
    return found


def test_a_draining_consumer_killed_mid_drain_has_its_running_jobs_taken_over(
    store: redis.Redis, st: SyncStore
) -> None:
    register(st, "a", T0)
    for i in range(3):
        enqueue(st, f"j{i}", T0)
    running = claim(st, "a", T0)
    assert len(running) == 3
    # SIGTERM: a drains, stays registered (skipped by enqueue) and keeps beating
    assert st.run(calls.drain(K, cid="a", pool="p", instance="i-a", now=T0 + 10)).state == "done"
    assert enqueue(st, "late", T0 + 20).outcome == "no_consumer"
    beat(st, "a", T0 + 1000, running)
    register(st, "b", T0 + 2000)
    # then SIGKILL: a's heartbeat lapses; b's sweep takes a's running jobs back to the pool
    later = T0 + 1000 + 5001
    beat(st, "b", later)
    assert st.run(calls.sweep(K, S, pool="p", cid="b", now=later)).moved == 3
    assert {t.id for t in claim(st, "b", later)} == {"j0", "j1", "j2"}
    assert store.zscore(K.workers("p"), "a") is None  # a is gone once it holds nothing


def test_leases_and_heartbeats_are_judged_by_the_server_clock(
    store: redis.Redis, st: SyncStore
) -> None:
    # no call carries the host's clock: with now=None every script reads TIME
    st.run(calls.register(K, S, cid="a", pool="p", instance="i-a", info="{}"))
    server_ms = int(store.time()[0]) * 1000
    expiry = store.zscore(K.workers("p"), "a")
    assert expiry is not None
    assert abs(expiry - (server_ms + 5000)) < 2000
    st.run(calls.enqueue(K, S, job_id="j", name="noop", pool="p", data="{}", delay_ms=0,
                         priority=0, attempts=1, timeout=30, backoff="{}"))  # fmt: skip
    tries = st.run(calls.claim(K, S, cid="a", pool="p", instance="i-a", n=1)).tries
    lease = store.zscore(K.active("a"), "j")
    assert lease is not None and abs(lease - (server_ms + 10_000)) < 2000
    # a sweep right away (server time) finds nothing lapsed, whatever the sweeper's own clock
    assert st.run(calls.sweep(K, S, pool="p", cid="a")).moved == 0
    assert status(store, tries[0].id) == "active"


def test_two_dlq_retries_at_once_run_the_job_once(store: redis.Redis, st: SyncStore) -> None:
    register(st, "a", T0)
    enqueue(st, "j", T0, attempts=1)
    (job,) = claim(st, "a", T0)
    finish(st, "a", job, Outcome.DEAD, T0 + 1, payload="boom")
    assert status(store, "j") == "dead"
    first = st.run(calls.dlq_retry(K, job_id="j", now=T0 + 2))
    second = st.run(calls.dlq_retry(K, job_id="j", now=T0 + 2))
    assert first == ("retried", "queued")
    assert second[0] == "conflict"
    assert places(store, "j") == [K.delayed("p")]
    # a delete racing the retry finds nothing to delete: the retried job still runs
    assert st.run(calls.dlq_delete(K, job_id="j", now=T0 + 3)) is None
    (again,) = claim(st, "a", T0 + 4)
    assert again.attempt == 1
    assert finish(st, "a", again, Outcome.COMPLETED, T0 + 5).recorded


def test_a_delete_then_a_retry_finds_nothing_to_retry(store: redis.Redis, st: SyncStore) -> None:
    register(st, "a", T0)
    enqueue(st, "j", T0, attempts=1)
    (job,) = claim(st, "a", T0)
    finish(st, "a", job, Outcome.DEAD, T0 + 1, payload="boom")
    deleted = st.run(calls.dlq_delete(K, job_id="j", now=T0 + 2))
    assert deleted is not None and deleted["status"] == "dead"
    assert st.run(calls.dlq_retry(K, job_id="j", now=T0 + 3))[0] == "missing"
    assert not store.exists(K.job("j"))


def test_a_job_claimed_again_after_its_lease_lapsed_refuses_the_first_try(
    store: redis.Redis, st: SyncStore
) -> None:
    register(st, "a", T0)
    enqueue(st, "j", T0)
    (first,) = claim(st, "a", T0)
    # a stays live but its lease on j lapses (its renewals did not arrive)
    beat(st, "a", T0 + 9000)
    beat(st, "a", T0 + 12_000)
    assert st.run(calls.sweep(K, S, pool="p", cid="a", now=T0 + 12_000)).moved == 1
    (second,) = claim(st, "a", T0 + 12_001)
    assert second.id == first.id and second.token != first.token
    # the first try's renewal, progress and finish are refused and change nothing
    assert beat(st, "a", T0 + 12_002, [first]).stale == ("j",)
    assert not st.run(calls.progress(K, job_id="j", token=first.token, value="50", now=T0))
    assert not finish(st, "a", first, Outcome.COMPLETED, T0 + 12_003, payload="1").recorded
    assert status(store, "j") == "active"
    assert finish(st, "a", second, Outcome.COMPLETED, T0 + 12_004, payload="2").recorded
    assert store.hget(K.job("j"), "result") == "2"
    assert store.hget(K.stats, "completed") == "1"


def test_an_abort_names_the_try_so_a_later_try_of_the_same_id_is_not_aborted(
    store: redis.Redis, st: SyncStore
) -> None:
    register(st, "a", T0)
    enqueue(st, "j", T0)
    (job,) = claim(st, "a", T0)
    assert st.run(calls.cancel(K, S, job_id="j", now=T0 + 1)) == ("cancelled", "active")
    assert store.lrange(K.wake("a"), 0, -1)[-1] == f"abort:j:{job.token}"
    assert finish(st, "a", job, Outcome.CANCELLED, T0 + 2).status == "cancelled"
    assert store.pttl(K.job("j")) > 0


def test_progress_after_the_record_expired_never_recreates_it(
    store: redis.Redis, st: SyncStore
) -> None:
    register(st, "a", T0)
    enqueue(st, "j", T0)
    (job,) = claim(st, "a", T0)
    finish(st, "a", job, Outcome.COMPLETED, T0 + 1, payload="null")
    assert not st.run(calls.progress(K, job_id="j", token=job.token, value="1", now=T0 + 2))
    store.delete(K.job("j"))  # the record expired
    assert not st.run(calls.progress(K, job_id="j", token=job.token, value="1", now=T0 + 3))
    assert not store.exists(K.job("j"))


def test_a_late_hand_back_of_a_dead_process_leaves_the_new_process_of_its_slot_alone(
    store: redis.Redis, st: SyncStore
) -> None:
    register(st, "a", T0, instance="old")
    enqueue(st, "j1", T0)
    st.run(calls.claim(K, S, cid="a", pool="p", instance="old", n=1, now=T0))
    # the old process died; the master hands its jobs back before the new one starts
    assert (
        st.run(calls.recover(K, S, cid="a", pool="p", instance="old", now=T0 + 1)).state == "done"
    )
    register(st, "a", T0 + 2, instance="new")
    (job,) = st.run(calls.claim(K, S, cid="a", pool="p", instance="new", n=1, now=T0 + 3)).tries
    # a second, late hand-back naming the dead process touches nothing of the new one
    late = st.run(calls.recover(K, S, cid="a", pool="p", instance="old", now=T0 + 4))
    assert late.state == "other" and late.moved == 0
    assert store.zscore(K.active("a"), job.id) is not None
    # and a process that lost its slot can no longer claim or beat
    gone = st.run(calls.claim(K, S, cid="a", pool="p", instance="old", n=1, now=T0 + 5))
    assert gone.state == "gone"


def test_a_new_process_in_a_slot_first_hands_back_what_the_previous_one_left(
    store: redis.Redis, st: SyncStore
) -> None:
    register(st, "a", T0, instance="old")
    enqueue(st, "j1", T0)
    st.run(calls.claim(K, S, cid="a", pool="p", instance="old", n=1, now=T0))
    taken = st.run(calls.register(K, S, cid="a", pool="p", instance="new", info="{}", now=T0 + 1))
    assert not taken.ok and taken.previous == "old"
    assert st.recover_all("a", "p", "old", now=T0 + 1).moved == 1
    assert st.run(calls.register(K, S, cid="a", pool="p", instance="new", info="{}", now=T0 + 2)).ok
    assert places(store, "j1") == [K.delayed("p")]


def test_an_idle_consumer_steals_the_highest_priority_job_of_the_most_loaded_peer(
    store: redis.Redis, st: SyncStore
) -> None:
    register(st, "a", T0)
    enqueue(st, "long", T0)
    claim(st, "a", T0, n=1)
    register(st, "b", T0 + 1)
    enqueue(st, "b-busy", T0 + 2)  # b is less loaded: b gets it
    claim(st, "b", T0 + 2, n=1)
    # both hold one; new jobs split between their queues, then b frees up
    for i, priority in enumerate([0, 5, 0, 9]):
        enqueue(st, f"q{i}", T0 + 10 + i, priority=priority)
    queued_on_a = store.zrange(K.ready("a"), 0, -1)
    assert queued_on_a
    stolen = claim(st, "b", T0 + 20, n=8)
    ids = [t.id for t in stolen]
    assert set(queued_on_a) <= set(ids)  # a's queue is taken too, not left behind "long"
    for t in stolen:
        assert store.hget(K.job(t.id), "worker") == "b"
    priorities = [int(store.hget(K.job(i), "priority") or 0) for i in queued_on_a]
    assert priorities == sorted(priorities, reverse=True)


def test_a_try_that_outlived_its_timeout_when_its_process_died_counts_as_timed_out(
    store: redis.Redis, st: SyncStore
) -> None:
    register(st, "a", T0)
    enqueue(st, "slow", T0, timeout=2.0, attempts=1, name="slow-job")
    enqueue(st, "fresh", T0, timeout=300.0)
    claim(st, "a", T0)
    # the master killed a (its job passed its own time-out) and hands back
    back = st.recover_all("a", "p", "i-a", now=T0 + 3000)
    assert back.moved == 1  # fresh goes back; slow is dead, and said so for the metrics
    assert back.ended == (("slow-job", "dead"),)
    slow = store.hgetall(K.job("slow"))
    assert slow["status"] == "dead" and slow["error"].startswith("timed out")
    assert slow.get("crashes") is None
    fresh = store.hgetall(K.job("fresh"))
    assert fresh["status"] == "queued" and fresh["crashes"] == "1" and fresh["attempts"] == "0"


def test_a_job_whose_process_died_too_often_is_dead_lettered_and_reported_as_crashed(
    store: redis.Redis, st: SyncStore
) -> None:
    register(st, "a", T0)
    enqueue(st, "fragile", T0, name="fragile-job")
    now = T0
    for crash in range(1, S.max_crashes + 1):
        register(st, "a", now)
        assert [t.id for t in claim(st, "a", now)] == ["fragile"], crash
        back = st.recover_all("a", "p", "i-a", now=now + 1)  # its process died
        last = crash == S.max_crashes
        assert back.ended == ((("fragile-job", "crashed"),) if last else ())
        now += 10
    job = store.hgetall(K.job("fragile"))
    assert job["status"] == "dead" and job["crashes"] == str(S.max_crashes)
    assert job["attempts"] == "0"  # crashes are not tries


def test_the_backlog_limit_counts_delayed_jobs(store: redis.Redis, st: SyncStore) -> None:
    register(st, "a", T0)
    outcomes = [enqueue(st, f"d{i}", T0, delay_ms=1).outcome for i in range(60)]
    assert outcomes.count("created") == S.backlog_limit
    assert outcomes[-1] == "backlog_full"


def test_a_large_hand_back_goes_in_bounded_batches(store: redis.Redis, st: SyncStore) -> None:
    register(st, "a", T0)
    register(st, "b", T0)
    big = Settings(**{**S.__dict__, "backlog_limit": 10_000})
    for i in range(1200):
        st.run(calls.enqueue(K, big, job_id=f"j{i}", name="noop", pool="p", data="{}",
                             delay_ms=0, priority=0, attempts=1, timeout=30, backoff="{}",
                             now=T0))  # fmt: skip
    on_a = store.zcard(K.ready("a"))
    batches = []
    while True:
        r = st.run(calls.recover(K, S, cid="a", pool="p", instance="i-a", batch=500, now=T0 + 1))
        batches.append(r.moved)
        if r.state == "done":
            break
    assert all(m <= 500 for m in batches) and sum(batches) == on_a and len(batches) >= 2


def test_one_consumer_sweeps_a_pool_at_a_time(store: redis.Redis, st: SyncStore) -> None:
    register(st, "a", T0)
    register(st, "b", T0)
    assert st.run(calls.sweep(K, S, pool="p", cid="a", now=T0)).state == "done"
    assert st.run(calls.sweep(K, S, pool="p", cid="b", now=T0)).state == "locked"
    assert st.run(calls.sweep(K, S, pool="p", cid="a", now=T0)).state == "done"


def test_finished_records_leave_with_their_index_entries_after_the_keep_time(
    store: redis.Redis, st: SyncStore
) -> None:
    register(st, "a", T0)
    enqueue(st, "done", T0)
    enqueue(st, "gone", T0)
    tries = claim(st, "a", T0)
    finish(st, "a", tries[0], Outcome.COMPLETED, T0 + 1, payload="null")
    st.run(calls.cancel(K, S, job_id=tries[1].id, now=T0 + 2))
    st.recover_all("a", "p", "i-a", now=T0 + 3)  # its holder died: the cancelled job ends there
    for job_id in ("done", "gone"):
        ttl = store.pttl(K.job(job_id))  # a backstop: the sweep deletes it at the keep time
        assert S.keep_result_seconds * 1000 < ttl <= (S.keep_result_seconds + 3600) * 1000
    assert status(store, "gone") == "cancelled"
    keep = S.keep_result_seconds * 1000
    register(st, "b", T0 + keep)
    st.run(calls.sweep(K, S, pool="p", cid="b", now=T0 + keep + 1))
    assert store.exists(K.job("done"), K.job("gone")) == 1  # "done" finished 1 ms earlier
    st.run(calls.sweep(K, S, pool="p", cid="b", now=T0 + keep + 3))
    assert store.exists(K.job("done"), K.job("gone")) == 0
    leftover = [key for key in store.scan_iter(f"{K.prefix}:index*") if store.zcard(key)]
    assert leftover == [] and store.zcard(K.expiring) == 0


def test_jobs_of_a_pool_removed_from_pools_are_reported_and_can_be_moved(
    store: redis.Redis, st: SyncStore
) -> None:
    register(st, "a", T0)
    enqueue(st, "j1", T0)
    enqueue(st, "j2", T0, delay_ms=60_000)
    store.sadd(G.pools, "p")
    assert st.unserved({"other"}) == {"p": 2}
    assert st.unserved({"p"}) == {}
    with pytest.raises(ValueError):
        st.move_pool("p", "q", now=T0)
    # a's heartbeat lapsed long ago (the pool is gone from POOLS): its jobs move, each copied
    # to q's store (its own slot) and then deleted here; a copy made twice is one job
    q = Keys(S.pool_prefix("q"))
    _, batch = st.run(calls.move_pool(K, S, source="p", target="q", now=T0 + 60_000))
    assert st.run(calls.adopt(q, pool="q", jobs=batch, now=T0 + 60_000)) == 2
    assert st.move_pool("p", "q", now=T0 + 60_000) == 0  # as if it stopped after the copy
    assert store.hget(q.job("j1"), "pool") == "q" and store.exists(K.job("j1")) == 0
    assert places(store, "j2") == [] and store.zscore(q.delayed("q"), "j2") == T0 + 60_000
    assert store.zcard(q.index()) == 2 and store.zcard(K.index()) == 0
    assert st.run(calls.waiting(K, pool="p", now=T0 + 60_001)) == 0
    assert st.unserved({"q"}) == {}

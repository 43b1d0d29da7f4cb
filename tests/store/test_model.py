"""A model-based test of the store: random interleavings of every operation against the real
scripts, with explicit times, and the invariants checked after every step."""

from __future__ import annotations

import json
from typing import Any

import redis
from helpers import Valkey
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from jobs.settings import Settings
from jobs.store import INDEXED, TERMINAL, Keys, Status, SyncStore, calls

S = Settings(
    pools={"p": 3},
    key_prefix="mt",
    heartbeat_interval=1.0,
    heartbeat_ttl=5.0,
    lease_seconds=10.0,
    max_crashes=3,
    dlq_max=1000,
    keep_result_seconds=3600,
    backlog_limit=1000,
)
K = Keys(S.pool_prefix("p"))
JOBS = [f"j{i}" for i in range(8)]
SLOTS = ["a", "b", "c"]
OUTCOMES = ["completed", "failed", "dead", "cancelled", "requeue", "limited"]
NAMES = ["report", "noop"]
GROUPS = ["ga", "gb"]
STEPS = {"count": 0}


def machine(client: redis.Redis) -> type[RuleBasedStateMachine]:
    class Store(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            client.flushall()
            self.store = SyncStore(client, S)
            self.now = 1_000_000
            self.instances: dict[str, int] = {}  # slot -> generation of its live process
            self.alive: set[str] = set()
            self.held: dict[str, dict[str, str]] = {s: {} for s in SLOTS}  # slot -> id -> token
            self.enqueued: set[str] = set()
            self.deduped: dict[str, str] = {}  # job -> the dedupe mode it was created under
            self.completed = 0
            self.dlq_left = 0  # dead-letter entries that left by retry or delete

        def instance(self, slot: str) -> str:
            return f"{slot}-{self.instances.get(slot, 0)}"

        def run(self, call: calls.Call[Any]) -> Any:
            STEPS["count"] += 1
            STEPS[call.script] = STEPS.get(call.script, 0) + 1
            return self.store.run(call)

        @initialize()
        def a_fleet_with_work(self) -> None:
            for slot in SLOTS:
                self.start(slot)
            for job in JOBS[:5]:
                self.enqueue(job, 0, 0)

        @rule(slot=st.sampled_from(SLOTS))
        def start(self, slot: str) -> None:
            self.instances[slot] = self.instances.get(slot, 0) + 1
            self.held[slot] = {}
            register = calls.register(K, S, cid=slot, pool="p", instance=self.instance(slot),
                                      info="{}", now=self.now)  # fmt: skip
            done = self.run(register)
            if not done.ok:
                self.store.recover_all(slot, "p", done.previous or "", now=self.now)
                assert self.run(register).ok
            self.alive.add(slot)

        @rule(slot=st.sampled_from(SLOTS))
        def die(self, slot: str) -> None:
            self.alive.discard(slot)

        @rule(ms=st.sampled_from([1, 300, 1500, 5500, 11_000, 3_600_001]))
        def tick(self, ms: int) -> None:
            self.now += ms

        @rule(
            job=st.sampled_from(JOBS),
            delay=st.sampled_from([0, 0, 2000]),
            prio=st.integers(-2, 2),
            group=st.sampled_from([None, None, *GROUPS]),
        )
        def enqueue(self, job: str, delay: int, prio: int, group: str | None = None) -> None:
            written = self.run(
                calls.enqueue(K, S, job_id=job, name=NAMES[int(job[1:]) % 2], pool="p", data="{}", delay_ms=delay,
                              priority=prio, attempts=2, timeout=20.0, backoff="{}", group=group,
                              now=self.now)
            )  # fmt: skip
            if written.outcome == "created":
                self.enqueued.add(job)
                self.deduped.pop(job, None)

        @rule(job=st.sampled_from(JOBS), mode=st.sampled_from(["simple", "throttle", "debounce"]))
        def enqueue_deduped(self, job: str, mode: str) -> None:
            # one key per mode; a day of ttl: no key expires by Redis' own clock meanwhile
            written = self.run(
                calls.enqueue(K, S, job_id=job, name=NAMES[0], pool="p", data="{}", delay_ms=0,
                              priority=0, attempts=2, timeout=20.0, backoff="{}",
                              dedupe=(f"k-{mode}", mode, 86_400_000), now=self.now)
            )  # fmt: skip
            if written.outcome == "created":
                self.enqueued.add(job)
                self.deduped[job] = mode
            elif written.outcome == "deduplicated":
                # the key's job stands: unfinished (simple), waiting (debounce), or any (throttle)
                assert written.job_id in self.enqueued or mode == "throttle", written

        @invariant()
        def a_dedupe_key_stands_for_one_job_at_a_time(self) -> None:
            status = {j: client.hget(K.job(j), "status") for j in self.deduped}
            made = {
                m: [j for j, mode in self.deduped.items() if mode == m]
                for m in ("simple", "throttle", "debounce")
            }
            unfinished = [j for j in made["simple"] if status[j] and status[j] not in TERMINAL]
            assert len(unfinished) <= 1, unfinished
            if unfinished:
                assert client.get(f"{K.prefix}:dedupe:p:k-simple") == unfinished[0]
            assert len(made["throttle"]) <= 1  # one per ttl
            waiting = [j for j in made["debounce"] if status[j] == "delayed"]
            assert len(waiting) <= 1, waiting

        @rule(slot=st.sampled_from(SLOTS))
        def beat(self, slot: str) -> None:
            if slot not in self.alive:
                return
            held = list(self.held[slot].items())
            done = self.run(calls.heartbeat(K, S, cid=slot, pool="p", instance=self.instance(slot),
                                            running=held, now=self.now))  # fmt: skip
            if done.gone:
                self.alive.discard(slot)
            for job in done.stale:
                self.held[slot].pop(job, None)

        @rule(slot=st.sampled_from(SLOTS), n=st.integers(0, 4))
        def claim(self, slot: str, n: int) -> None:
            if slot not in self.alive:
                return
            claimed = self.run(calls.claim(K, S, cid=slot, pool="p", instance=self.instance(slot),
                                           n=n, now=self.now))  # fmt: skip
            assert len(claimed.tries) <= n
            for t in claimed.tries:
                for other in SLOTS:  # whoever held it before has lost it
                    self.held[other].pop(t.id, None)
                self.held[slot][t.id] = t.token

        @rule(slot=st.sampled_from(SLOTS), n=st.integers(1, 4))
        def claim_more(self, slot: str, n: int) -> None:
            self.claim(slot, n)

        @rule(slot=st.sampled_from(SLOTS), outcome=st.sampled_from(OUTCOMES))
        def finish_current(self, slot: str, outcome: str) -> None:
            self.finish(slot, outcome, False)

        @rule(slot=st.sampled_from(SLOTS), outcome=st.sampled_from(OUTCOMES), stale=st.booleans())
        def finish(self, slot: str, outcome: str, stale: bool) -> None:
            if not self.held[slot]:
                return
            job, token = sorted(self.held[slot].items())[0]
            if stale:
                token = "0-0"
            current = client.hget(K.job(job), "token")
            before = client.hgetall(K.job(job))
            done = self.run(
                calls.finish(K, S, job_id=job, cid=slot, pool="p", token=token, outcome=outcome,
                             payload="null", retry_delay=1.0, now=self.now)
            )  # fmt: skip
            if token != current:
                assert not done.recorded
                assert client.hgetall(K.job(job)) == before  # a stale try changes nothing
            if done.recorded:
                self.held[slot].pop(job)
                if done.status == "completed":
                    self.completed += 1
            elif not stale:
                self.held[slot].pop(job)

        @rule(slot=st.sampled_from(SLOTS), stale=st.booleans())
        def progress(self, slot: str, stale: bool) -> None:
            for job, token in list(self.held[slot].items())[:1]:
                valid = client.hget(K.job(job), "token") == token and not stale
                stored = self.run(calls.progress(K, job_id=job, token="0-0" if stale else token,
                                                 value="5", now=self.now))  # fmt: skip
                if stored:
                    assert valid

        @rule(slot=st.sampled_from(SLOTS))
        def sweep(self, slot: str) -> None:
            if slot in self.alive:
                self.run(calls.sweep(K, S, pool="p", cid=slot, now=self.now))

        @rule(slot=st.sampled_from(SLOTS), batch=st.integers(1, 3))
        def recover_dead(self, slot: str, batch: int) -> None:
            if slot in self.alive:
                return
            self.run(calls.recover(K, S, cid=slot, pool="p", instance=self.instance(slot),
                                   batch=batch, now=self.now))  # fmt: skip
            self.held[slot] = {}

        @rule(slot=st.sampled_from(SLOTS))
        def drain(self, slot: str) -> None:
            if slot in self.alive:
                self.run(calls.drain(K, cid=slot, pool="p", instance=self.instance(slot),
                                     now=self.now))  # fmt: skip

        @rule(
            paused=st.booleans(),
            concurrency=st.sampled_from([None, 1, 3]),
            cap=st.sampled_from([None, 1]),
            rate=st.sampled_from([None, 2]),
            groups=st.sampled_from([None, {"concurrency": 1}, {"rate": {"max": 1, "period": 1}}]),
        )
        def limit(
            self,
            paused: bool,
            concurrency: int | None,
            cap: int | None,
            rate: int | None,
            groups: dict[str, Any] | None,
        ) -> None:
            limits: dict[str, Any] = {}
            if groups:
                limits["groups"] = groups
            if concurrency:
                limits["concurrency"] = concurrency
            if cap:
                limits["jobs"] = {"report": {"concurrency": cap}}
            if rate:
                limits["rate"] = {"max": rate, "period": 1}
            self.run(calls.control(K, pool="p", what="limits", limits=limits or None, now=self.now))
            what = "pause" if paused else "resume"
            self.run(calls.control(K, pool="p", what=what, now=self.now))

        @rule(job=st.sampled_from(JOBS))
        def cancel(self, job: str) -> None:
            self.run(calls.cancel(K, S, job_id=job, now=self.now))

        @rule(job=st.sampled_from(JOBS))
        def dlq_retry(self, job: str) -> None:
            outcome, _ = self.run(calls.dlq_retry(K, job_id=job, now=self.now))
            if outcome == "retried":
                self.dlq_left += 1
                self.deduped.pop(job, None)  # it runs again without taking back a dedupe key

        @rule(job=st.sampled_from(JOBS))
        def dlq_delete(self, job: str) -> None:
            if self.run(calls.dlq_delete(K, job_id=job, now=self.now)) is not None:
                self.dlq_left += 1
                self.enqueued.discard(job)
                self.deduped.pop(job, None)

        @invariant()
        def each_unfinished_job_is_in_exactly_one_place_with_one_holder(self) -> None:
            sets: dict[str, set[str]] = {}
            for key in client.scan_iter(f"{K.prefix}:*"):
                listing = key.startswith(K.index()) or key == K.expiring
                if client.type(key) == "zset" and not key.endswith(":dlq") and not listing:
                    sets[key] = set(client.zrange(key, 0, -1))
            for key in client.scan_iter(f"{K.prefix}:job:*"):
                job = key.rsplit(":", 1)[1]
                assert job in self.enqueued, f"{job} was never accepted"
                record = client.hgetall(key)
                status = record.get("status")
                assert status, f"{job} has a record without a status: {record}"
                where = [k for k, members in sets.items() if job in members]
                actives = [k for k in where if ":active:" in k]
                if status == "active":
                    assert len(where) == 1 and len(actives) == 1, (job, status, where)
                    assert record.get("token"), record
                elif status == "cancelled" and actives:
                    assert len(where) == 1, (job, where)  # its try runs on; its end records it
                elif status in TERMINAL:
                    assert where == [], (job, status, where)
                    if status == "dead":
                        assert client.zscore(K.dlq, job) is not None
                    else:
                        assert client.pttl(key) > 0, (job, status)
                else:
                    assert len(where) == 1 and not actives, (job, status, where)
                    assert not record.get("token"), record

        @invariant()
        def each_record_is_listed_once_under_its_status_if_indexed_and_nothing_listed_is_gone(
            self,
        ) -> None:
            records = {
                key.rsplit(":", 1)[1]: client.hgetall(key)
                for key in client.scan_iter(f"{K.prefix}:job:*")
            }
            assert set(client.zrange(K.index(), 0, -1)) == set(records)
            by_status = {s: set(client.zrange(K.index(s), 0, -1)) for s in INDEXED}
            assert not any(client.exists(K.index(s)) for s in set(Status) - INDEXED)
            expiring = set(client.zrange(K.expiring, 0, -1))
            running = {j for slot in SLOTS for j in client.zrange(K.active(slot), 0, -1)}
            for job, record in records.items():
                status = record["status"]
                listed = [s for s, members in by_status.items() if job in members]
                assert listed == ([status] if status in INDEXED else []), (job, status, listed)
                finished = status == "completed" or (status == "cancelled" and job not in running)
                assert (job in expiring) == finished, (job, status)
                tries = json.loads(record.get("tries", "[]"))
                assert len(tries) <= 25 and all(t["outcome"] for t in tries), tries
            assert expiring <= set(records)

        @invariant()
        def a_limited_pool_counts_exactly_its_held_tries(self) -> None:
            records = [client.hgetall(key) for key in client.scan_iter(f"{K.prefix}:job:*")]
            held = [r for r in records if r.get("held")]
            assert all(r["status"] == "active" for r in held), held
            counts = client.hgetall(K.running("p"))
            assert int(counts.get("all", 0)) == len(held)
            for name in NAMES:
                assert int(counts.get(f"n:{name}", 0)) == sum(1 for r in held if r["name"] == name)
            for group in GROUPS:
                in_group = sum(1 for r in held if r.get("group") == group)
                assert int(counts.get(f"g:{group}", 0)) == in_group, (group, counts)
                queued = client.zrange(K.group("p", group), 0, -1)
                assert all(client.hget(K.job(j), "group") == group for j in queued)
            waiting = sum(client.zcard(K.group("p", g)) for g in GROUPS)
            assert int(client.get(K.grouped("p")) or 0) == waiting

        @invariant()
        def the_load_index_counts_what_each_accepting_consumer_holds(self) -> None:
            registered = set(client.zrange(K.workers("p"), 0, -1))
            accepting = registered - client.smembers(K.draining("p"))
            load = dict(client.zrange(K.load("p"), 0, -1, withscores=True))
            assert set(load) == accepting, (load, registered)
            for cid, held in load.items():
                assert held == client.zcard(K.ready(cid)) + client.zcard(K.active(cid)), cid
            queued = sum(client.zcard(K.ready(slot)) for slot in SLOTS)
            assert int(client.get(K.queued("p")) or 0) == queued

        @invariant()
        def counters_equal_the_truth(self) -> None:
            stats = client.hgetall(K.stats)
            assert int(stats.get("completed", 0)) == self.completed
            dead = int(stats.get("deadLettered", 0))
            assert dead == client.zcard(K.dlq) + self.dlq_left + int(stats.get("dlqDropped", 0))
            minutes = [client.hgetall(key) for key in client.scan_iter(f"{K.prefix}:minute:p:*")]
            for field in ("completed", "failed", "deadLettered"):
                assert sum(int(m.get(field, 0)) for m in minutes) == int(stats.get(field, 0))

    return Store


def test_random_interleavings_keep_every_job_in_exactly_one_place_with_one_holder(
    valkey: Valkey,
) -> None:
    client = valkey.client()
    try:
        run_state_machine_as_test(
            machine(client),
            settings=settings(
                max_examples=150,
                stateful_step_count=50,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        client.close()
    print(f"model test: {STEPS}")

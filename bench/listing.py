"""The job listing's cost with 1,000,000 stored jobs; prints figures, asserts nothing on speed.

    .venv/bin/python bench/listing.py                # 1,000,000 jobs (a few minutes, ~2 GB)
    .venv/bin/python bench/listing.py --jobs 100000

Fills its own Valkey through the real enqueue, claim and finish scripts (pipelined), then times
listing calls on a SyncStore and through a running HTTP service (no consumers). Every process
started here is stopped by pid.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers import Valkey, children, free_port, kill_tree, wait_for  # noqa: E402

from jobs.settings import Settings  # noqa: E402
from jobs.store import LIST_BUDGET, Call, Page, Status, SyncStore, calls, library, merge_pages  # noqa: E402
from jobs.store import listing as store_listing  # noqa: E402

CHUNK = 10_000  # jobs enqueued, claimed and finished per round of pipelines
REPEAT = 20
RARE, WORD = "rebuild", "quarantined"  # the name of 0.1% of the jobs; in the error of 0.1%
NAMES = {"email": ("default", 0.4), "resize": ("default", 0.25), "report": ("worker1", 0.2),
         "sync": ("worker2", 0.149), RARE: ("worker1", 0.001)}  # fmt: skip
POOLS = sorted({pool for pool, _ in NAMES.values()})  # each its own store: a listing merges them
# the rest of a chunk stays queued, at priority -1 so that the claims pass it by
FATE_SHARES = {"completed": 0.905, "dead": 0.019, "dead-word": 0.001, "failed": 0.01,
               "active": 0.005, "queued": 0.06}  # fmt: skip
Filters = dict[str, str]  # status, name, q of a listing call
NOTES = ("invoice", "refund", "shipment", "renewal", "upgrade", "welcome", "digest", "reminder")


def log(*parts: object) -> None:
    print(f"[listing {time.strftime('%H:%M:%S')}]", *parts, file=sys.stderr, flush=True)


def pipelined(store: SyncStore, batch: list[Call[Any]]) -> list[Any]:
    library.load(store.redis)
    pipe = store.redis.pipeline(transaction=False)
    for c in batch:
        pipe.fcall(library.function(c.script), len(c.keys), *c.keys, *c.args)
    return [c.decode(r) for c, r in zip(batch, pipe.execute(), strict=True)]


def fill(store: SyncStore, jobs: int) -> None:
    s, rnd = store.settings, random.Random(1)
    pools = {name: pool for name, (pool, _) in NAMES.items()}
    cids = {pool: f"bench-{pool}-1" for pool in set(pools.values())}
    for pool, cid in cids.items():
        store.run(
            calls.register(store.at(pool), s, cid=cid, pool=pool, instance="bench", info="{}")
        )
    for start in range(0, jobs, CHUNK):
        fates: dict[str, str] = {}
        enqueues, wanted = [], dict.fromkeys(cids, 0)
        for n in range(start, min(start + CHUNK, jobs)):
            name = rnd.choices(list(NAMES), [share for _, share in NAMES.values()])[0]
            fate = rnd.choices(list(FATE_SHARES), list(FATE_SHARES.values()))[0]
            ident = secrets.token_hex(16)
            fates[ident] = fate
            wanted[pools[name]] += fate != "queued"
            note = f"{rnd.choice(NOTES)} for customer {n % 5000} " + "x" * rnd.randint(20, 40)
            data = f'{{"order": {n}, "customer": "c-{n % 5000:05d}", "note": "{note}"}}'
            enqueues.append(calls.enqueue(
                store.at(pools[name]), s, job_id=ident, name=name, pool=pools[name], data=data, delay_ms=0,
                priority=-1 if fate == "queued" else 0, attempts=3, timeout=60.0,
                backoff='{"type": "exponential", "delay": 2}'))  # fmt: skip
        assert all(w.outcome == "created" for w in pipelined(store, enqueues))
        finishes = []
        for pool, want in wanted.items():
            while want > 0:
                claim = calls.claim(
                    store.at(pool),
                    s,
                    cid=cids[pool],
                    pool=pool,
                    instance="bench",
                    n=min(want, 1000),
                )
                tries = store.run(claim).tries
                assert tries, f"a claim of {pool} got nothing"
                want -= len(tries)
                for t in tries:
                    fate = fates[t.id]
                    if fate == "active":
                        continue  # keeps its lease (nothing sweeps here)
                    err = (f"UpstreamError: {WORD} by the fraud check (order {t.id[:8]})"
                           if fate == "dead-word" else f"ConnectionError: upstream {pool} "
                           f"answered 503 after {rnd.randint(1, 30)} s")  # fmt: skip
                    outcome = {"dead-word": "dead"}.get(fate, fate)
                    finishes.append(calls.finish(
                        store.at(pool), s, job_id=t.id, cid=cids[pool], pool=pool, token=t.token,
                        outcome=outcome, payload='{"sent": true}' if fate == "completed" else err,
                        traceback=f"Traceback (most recent call last):\n  ...\n{err}",
                        retry_delay=86_400.0))  # fmt: skip
        assert all(r.recorded for r in pipelined(store, finishes))
        if (start // CHUNK) % 10 == 9:
            log(f"{start + CHUNK:,} jobs")


def listing(store: SyncStore, f: Filters, cursor: str | None = None, limit: int = 50) -> Page:
    filters = {"status": f.get("status", ""), "pool": "", "name": f.get("name", ""),
               "q": f.get("q", "")}  # fmt: skip
    pages = [store.run(c) for c in store_listing(store.at, POOLS, filters, limit, cursor)]
    return merge_pages(pages, limit)


def row(label: str, times: list[float], rows: int) -> list[Any]:
    med, top = statistics.median(times) * 1000, max(times) * 1000
    return [label, len(times), rows, f"{med:.2f}", f"{top:.2f}", f"{sum(times) * 1000:.1f}"]


def repeated(label: str, call: Callable[[], int]) -> list[Any]:
    """The same call REPEAT times; rows: what one call returned."""
    times, rows = [], 0
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        rows = call()
        times.append(time.perf_counter() - t0)
    return row(label, times, rows)


def walk(store: SyncStore, label: str, f: Filters, limit: int = 50) -> list[Any]:
    """Page on from the newest job to the end of the index; rows: all the pages returned."""
    times, rows, cursor = [], 0, None
    while True:
        t0 = time.perf_counter()
        page = listing(store, f, cursor, limit)
        times.append(time.perf_counter() - t0)
        rows += len(page.rows)
        if (cursor := page.cursor) is None:
            return row(label, times, rows)


def page_rows(store: SyncStore, f: Filters, cursor: str | None = None) -> int:
    return len(listing(store, f, cursor).rows)


def http_jobs(http: httpx.Client, query: str) -> int:
    r = http.get(f"/jobs?{query}")
    assert r.status_code == 200, r.text
    return len(r.json()["jobs"])


def through_http(tmp: Path, valkey: Valkey) -> list[list[Any]]:
    port = free_port()
    env = {**os.environ, "REDIS_URL": valkey.url, "PORT": str(port), "WEB_CONCURRENCY": "1",
           "CONSUMERS": "0", "POOLS": "", "NODE_NAME": "listing", "LOG_LEVEL": "WARNING",
           "DATA_DIR": str(tmp / "data"), "PYTHONPATH": str(ROOT)}  # fmt: skip
    with (tmp / "service.log").open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "supervisor"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
                wait_for(lambda: http.get("/health").status_code == 200, 60, 0.1, "the service")
                http_jobs(http, "limit=1")
                queries = ("limit=50", "status=dead", f"name={RARE}", f"q={WORD}")
                return [repeated(f"HTTP /jobs?{q}", partial(http_jobs, http, q)) for q in queries]
        finally:
            tree = [proc.pid, *children(proc.pid)]
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
            for pid in tree:
                kill_tree(pid)


def used_memory(store: SyncStore) -> int:
    return int(store.redis.info("memory")["used_memory"])


def figures(store: SyncStore, jobs: int) -> list[list[Any]]:
    before, t0 = used_memory(store), time.monotonic()
    fill(store, jobs)
    fill_s, after = time.monotonic() - t0, used_memory(store)
    print(f"jobs {jobs:,}  fill {fill_s:.1f} s ({jobs / fill_s:,.0f} jobs/s)")
    print(f"used_memory before {before / 2**20:,.1f} MiB, after {after / 2**20:,.1f} MiB"
          f" ({(after - before) / jobs:,.0f} B per job in all)")  # fmt: skip
    index_bytes = 0
    keys = [store.at(pool) for pool in POOLS]
    for key in [k.index(status) for k in keys for status in (None, *Status)]:
        entries, size = store.redis.zcard(key), store.redis.memory_usage(key, samples=0) or 0
        index_bytes += size
        if entries:
            print(f"  {key:<22} {entries:>9,} entries {size / 2**20:7.1f} MiB"
                  f" {size / entries:6.1f} B/entry")  # fmt: skip
    print(f"listing index keys: {index_bytes / jobs:.1f} B per job")
    log("timing")
    cases = [{}, {"status": "completed"}, {"status": "dead"}, {"name": RARE}, {"q": WORD}]
    table = [
        repeated("first page " + (" ".join(f"{a}={b}" for a, b in f.items()) or "no filter"),
                 partial(page_rows, store, f)) for f in cases
    ]  # fmt: skip
    cursor, times = None, []
    for _ in range(10_000 // 50):
        t0 = time.perf_counter()
        cursor = listing(store, {}, cursor).cursor
        times.append(time.perf_counter() - t0)
    table.append(row("200 pages to 10,000 deep", times, 10_000))
    table.append(repeated("page 10,000 deep (cursor)", partial(page_rows, store, {}, cursor)))
    table.append(walk(store, f"walk to end name={RARE}", {"name": RARE}))
    table.append(walk(store, f"walk to end q={WORD}", {"q": WORD}))
    table.append(walk(store, "bulk walk status=dead (200)", {"status": "dead"}, 200))
    table.append(walk(store, f"bulk walk dead q={WORD}", {"status": "dead", "q": WORD}, 200))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1_000_000, help="stored jobs (1000000)")
    args = parser.parse_args()
    settings = Settings(backlog_limit=10**9, dlq_max=10**9, heartbeat_ttl=1e6, lease_seconds=1e6)
    with tempfile.TemporaryDirectory(prefix="mq-listing-") as tmp:
        valkey = Valkey(Path(tmp) / "valkey")
        try:
            store = SyncStore(valkey.client(), settings)
            table = figures(store, args.jobs)
            log("timing through HTTP")
            table += through_http(Path(tmp), valkey)
            store.redis.close()
        finally:
            valkey.stop()
    print(f"\nLIST_BUDGET {LIST_BUDGET} entries per call; ms per call (perf_counter)")
    for line in [["call", "calls", "rows", "median", "max", "total"], *table]:
        print(f"{line[0]:<34}" + "".join(f"{x:>9}" for x in line[1:]))


if __name__ == "__main__":
    main()

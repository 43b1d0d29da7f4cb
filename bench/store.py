"""The store's scripts alone, no HTTP and no consumer processes: Valkey's own time per enqueue
with 2 and with 64 registered consumers, and per job for claim + finish (2 consumers, claims
of 8), from `INFO commandstats`; plus the commands the scripts run per job. Each case runs
`--reps` times (default 3); the figures of every run are printed, for the noise.

    .venv/bin/python bench/store.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]

from helpers import Valkey  # noqa: E402

from jobs.settings import Settings  # noqa: E402
from jobs.store import Keys, SyncStore, calls  # noqa: E402

POOL = "default"
SETTINGS = Settings.from_env({"POOLS": ""})
KEYS = Keys(SETTINGS.pool_prefix(POOL))


def fresh(store: SyncStore, consumers: int, now: int) -> list[str]:
    """An empty store with `consumers` registered; their ids."""
    store.redis.flushall()
    cids = [f"c{i}" for i in range(consumers)]
    for cid in cids:
        register = calls.register(KEYS, SETTINGS, cid=cid, pool=POOL, instance="bench",
                                  info="{}", now=now)  # fmt: skip
        assert store.run(register).ok
    store.redis.config_resetstat()
    return cids


def enqueue(store: SyncStore, jobs: int, now: int) -> None:
    for i in range(jobs):
        call = calls.enqueue(KEYS, SETTINGS, job_id=f"j{i}", name="noop", pool=POOL, data="{}",
                             delay_ms=0, priority=0, attempts=1, timeout=1, backoff="{}",
                             now=now)  # fmt: skip
        assert store.run(call).outcome == "created"


def script_us(store: SyncStore) -> tuple[float, dict[str, int]]:
    """FCALL microseconds, and the calls of every command the scripts ran, since the reset."""
    stats = store.redis.info("commandstats")
    inner = {
        name.removeprefix("cmdstat_"): int(row["calls"])
        for name, row in stats.items()
        if name not in ("cmdstat_fcall", "cmdstat_info", "cmdstat_config|resetstat")
    }
    return float(stats["cmdstat_fcall"]["usec"]), inner


def drain(store: SyncStore, cids: list[str], jobs: int, now: int) -> None:
    done = 0
    while done < jobs:
        for cid in cids:
            claim = calls.claim(KEYS, SETTINGS, cid=cid, pool=POOL, instance="bench", n=8,
                                now=now)  # fmt: skip
            for t in store.run(claim).tries:
                finish = calls.finish(KEYS, SETTINGS, cid=cid, pool=POOL, job_id=t.id,
                                      token=t.token, outcome="completed", payload="null",
                                      now=now)  # fmt: skip
                assert store.run(finish).recorded
                done += 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=16_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    n = args.jobs
    with tempfile.TemporaryDirectory() as tmp:
        server = Valkey(Path(tmp))
        try:
            store = SyncStore(server.client(), SETTINGS)
            now = int(time.time() * 1000)
            for consumers in (2, 64):
                runs = []
                for _ in range(args.reps):
                    fresh(store, consumers, now)
                    enqueue(store, n, now)
                    runs.append(script_us(store)[0] / n)
                shown = ", ".join(f"{us:.1f}" for us in runs)
                print(f"enqueue, {consumers} consumers: {shown} us of script time per job")
            runs, commands = [], {}
            for _ in range(args.reps):
                cids = fresh(store, 2, now)
                enqueue(store, n, now)
                before, _ = script_us(store)
                drain(store, cids, n, now)
                after, commands = script_us(store)
                runs.append((after - before) / n)
            shown = ", ".join(f"{us:.1f}" for us in runs)
            print(f"claim + finish, 2 consumers: {shown} us of script time per job")
            per_job = {name: round(c / n, 2) for name, c in sorted(commands.items()) if c}
            print(f"commands per job (enqueue, claim, finish): {sum(commands.values()) / n:.2f}")
            print(f"  {per_job}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()

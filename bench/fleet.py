"""A fleet on one Valkey: 1, 2 and 4 instances of `python -m supervisor` (each its own port and
NODE_NAME, in the root namespace) share one Valkey; each gets its own wrk. Per fleet size it
prints enqueue jobs/s (HTTP, all instances together), completed jobs/s (first request to last
completion), the Valkey process's CPU seconds per 1,000 jobs (/proc/<pid>/stat) and, from
`INFO commandstats`, the commands and the server microseconds per job, the figures that say
at which fleet size one Valkey core is the limit (README, "Running a fleet").

    .venv/bin/python bench/fleet.py                         # 20,000 jobs per fleet size
    .venv/bin/python bench/fleet.py --jobs 500 --sizes 1,2  # smoke test

Each instance: WEB_CONCURRENCY=1, CONSUMERS=1 (8 slots), noop jobs. On a machine with fewer
cores than the fleet needs, the instances share the CPU and the figures say more about the
machine than about the fleet. Every process started here is stopped by pid.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent / "tests")]

from helpers import free_port, wait_for  # noqa: E402
from run import Run, cpu_seconds, log, wrk_command, wrk_summary  # noqa: E402

from jobs.store import Keys  # noqa: E402

PREFIX = "{mq:default}"  # the default pool's store
CONNECTIONS = 64  # in all, split over the instances' wrk processes


def commandstats(store: Any) -> dict[str, tuple[int, float]]:
    """calls and usec of each command since the last CONFIG RESETSTAT."""
    out = {}
    for name, row in store.info("commandstats").items():
        out[name.removeprefix("cmdstat_")] = (int(row["calls"]), float(row["usec"]))
    return out


def measure(run: Run, size: int, jobs: int, consumers: int) -> dict[str, Any]:
    store = run.store
    store.flushall()
    ports = [free_port() for _ in range(size)]
    procs = []
    try:
        for i, port in enumerate(ports, 1):
            env = run.env(consumers, PORT=str(port), NODE_NAME=f"fleet{i}", WEB_CONCURRENCY="1",
                          DATA_DIR=str(run.tmp / f"data{i}"))  # fmt: skip
            procs.append(run.spawn([sys.executable, "-m", "supervisor"], env))
        wait_for(lambda: run.live() == size * consumers, 60, 0.05, f"{size} instances' consumers")
        share = [jobs // size + (1 if i < jobs % size else 0) for i in range(size)]
        index = Keys(PREFIX).index()
        store.config_resetstat()
        valkey_before = cpu_seconds(run.valkey.proc.pid)
        t0 = time.monotonic()
        loads: list[subprocess.Popen[str]] = []
        try:
            for port, n in zip(ports, share, strict=True):
                loads.append(
                    subprocess.Popen(
                        wrk_command(port, 600, max(1, CONNECTIONS // size)),
                        env={**run.env(0), "WRK_LIMIT": str(n)},
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                        text=True,
                    )
                )
            # until every job is in and completed, or nothing moved for 2 s (wrk may lose a
            # request to a connection the server closes); each phase ends at its last step
            deadline, created, completed = t0 + 300, 0, 0
            last_in = last_done = t0
            while completed < jobs and time.monotonic() < deadline:
                time.sleep(0.002)
                now = time.monotonic()
                seen_in, seen_done = int(store.zcard(index)), run.counter("completed")
                if seen_in > created:
                    created, last_in = seen_in, now
                if seen_done > completed:
                    completed, last_done = seen_done, now
                if completed >= created and now - max(last_in, last_done) > 2:
                    break
        finally:
            for load in loads:  # wrk prints its totals on SIGINT
                load.send_signal(signal.SIGINT)
            outputs = [load.communicate(timeout=30)[0] for load in loads]
        enqueued_s, completed_s = last_in - t0, last_done - t0
        valkey_cpu = cpu_seconds(run.valkey.proc.pid) - valkey_before
        stats = commandstats(store)
    finally:
        for proc in procs:
            run.stop(proc)
    # commandstats counts the commands a script calls twice: on their own line and inside
    # the script's FCALL time. Every job's writes are FCALLs (jobs/store/library.py); what a
    # client sends besides (BLPOP wake-ups) is counted on its own; the bench's own polling
    # (ZCARD, HGET, INFO, CONFIG) is not the fleet's and is left out.
    scripts, script_us = stats.get("fcall", (0, 0.0))
    direct = {name: stats[name] for name in ("blpop", "ping") if name in stats}
    calls = scripts + sum(c for c, _ in direct.values())
    usec = script_us + sum(u for _, u in direct.values())
    wrk = [wrk_summary(out) for out in outputs]
    return {
        "instances": size,
        "jobs": created,
        "lost_by_wrk": jobs - created,
        "completed": completed,
        "non_2xx": sum(w["non_2xx"] for w in wrk),
        "enqueue_jps": round(created / enqueued_s, 1),
        "completed_jps": round(completed / completed_s, 1),
        "valkey_cpu_s_per_1000": round(valkey_cpu / max(1, completed) * 1000, 3),
        "commands_per_job": round(calls / max(1, completed), 1),
        "server_us_per_job": round(usec / max(1, completed), 1),
        "fcalls_per_job": round(scripts / max(1, completed), 2),
        "fcall_us_per_job": round(script_us / max(1, completed), 1),
        "inside_scripts_us_per_job": {
            name: round(u / max(1, completed), 1)
            for name, (_, u) in sorted(stats.items(), key=lambda kv: -kv[1][1])
            if name not in ("fcall", "blpop", "ping", "zcard", "hget", "info")
        },
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| instances | jobs | enqueue jobs/s | completed jobs/s | Valkey CPU s / 1000 jobs "
        "| commands / job | server us / job |"
    )
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['instances']} | {r['jobs']:,} | {r['enqueue_jps']:,} | {r['completed_jps']:,} "
            f"| {r['valkey_cpu_s_per_1000']} | {r['commands_per_job']} "
            f"| {r['server_us_per_job']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per fleet size")
    parser.add_argument("--sizes", default="1,2,4", help="fleet sizes, comma-separated")
    parser.add_argument("--consumers", type=int, default=1, help="consumers per instance")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="mq-fleet-bench-") as tmp:
        run = Run(True, Path(tmp), "none")
        try:
            for size in sizes:
                log(f"{size} instance(s), {args.jobs} jobs")
                rows.append(measure(run, size, args.jobs, args.consumers))
        finally:
            run.close()
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    (HERE / "results-fleet.json").write_text(json.dumps(out, indent=2))
    print(table(rows))
    for r in rows:
        top = dict(list(r["inside_scripts_us_per_job"].items())[:5])
        print(f"{r['instances']} instance(s): {r['fcalls_per_job']} FCALLs per job, "
              f"{r['fcall_us_per_job']} us; inside them, us per job: {top}")  # fmt: skip


if __name__ == "__main__":
    main()

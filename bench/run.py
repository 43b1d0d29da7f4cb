"""Benchmark the service with the BullMQ peer's phases and topology; print one table.

    .venv/bin/python bench/run.py            # full run (~4 min)
    .venv/bin/python bench/run.py --quick    # smoke test
    .venv/bin/python bench/run.py --peer     # ../shared/bench/bullmq before and after, ratios

Topology as the peer's: 2 HTTP workers, 2 consumers x 8, wrk -t1 -c64, noop jobs. Each
figure is measured twice: on a Valkey with no persistence over loopback TCP (like the
peer's), and on the embedded server's own command line (AOF everysec, Unix socket), which is
what `python -m supervisor` runs without REDIS_URL; the two in turns, phase by phase. Growth:
enqueue and /queue/stats with GROWTH_WAITING jobs waiting over GROWTH_CONSUMERS registered
consumers, against the same with an empty queue, and that against 2 consumers, measured back
to back. The whole output goes to bench/results.json. Every process started here is stopped by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers import Valkey, children, debian_tool, free_port, kill_tree, wait_for  # noqa: E402

from jobs.queue import Queue  # noqa: E402
from jobs.settings import Settings  # noqa: E402
from jobs.store import Keys  # noqa: E402
from supervisor import embedded  # noqa: E402

PEER = ROOT.parent / "shared" / "bench" / "bullmq"
NODE = "bench"
PREFIX = "{mq:default}"  # the default pool's store
GROWTH_WAITING = 100_000
GROWTH_CONSUMERS = 64
PERSISTENCE = ("none", "aof")


def log(*parts: object) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}]", *parts, file=sys.stderr, flush=True)


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return round(total / 1024, 1)


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk_command(port: int, seconds: float, connections: int = 64) -> list[str]:
    """wrk enqueueing noop jobs on one port (with WRK_LIMIT in its environment, it stops
    sending after that many requests)."""
    url = f"http://127.0.0.1:{port}/enqueue-task"
    script = str(HERE / "wrk" / "enqueue.lua")
    wrk = debian_tool("wrk", "wrk")
    return [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", script, url]


def wrk_summary(stdout: str) -> dict[str, Any]:
    """The figures of enqueue.lua's WRKJSON line."""
    line = next(x for x in stdout.splitlines() if x.startswith("WRKJSON "))
    r = json.loads(line[8:])
    secs = r["duration_us"] / 1e6
    ok = r["requests"] - r["errors"]["status"]
    return {
        "requests": r["requests"],
        "responses_2xx": ok,
        "non_2xx": r["errors"]["status"],
        "rps_2xx": round(ok / secs, 1),
        "latency_ms": {k: round(v / 1000, 2) for k, v in r["latency_us"].items()},
        "duration_s": round(secs, 3),
    }


class EmbeddedValkey:
    """The embedded server's own command line (AOF everysec, a Unix socket), stopped by pid."""

    def __init__(self, data_dir: Path) -> None:
        args, self.url = embedded.command(data_dir, 4 << 30)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        wait_for(lambda: self.client().ping(), 10, 0.05, "the embedded server")

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, decode_responses=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Run:
    def __init__(self, quick: bool, tmp: Path, persistence: str = "none") -> None:
        self.quick = quick
        self.tmp = tmp
        self.wrk_s = 2 if quick else 10
        self.warmup_s = 1 if quick else 2
        self.drain_jobs = 2000 if quick else 20000
        self.latency_s = 3 if quick else 10
        self.growth_waiting = 10_000 if quick else GROWTH_WAITING
        self.valkey: Any = (
            EmbeddedValkey(tmp / "valkey") if persistence == "aof" else Valkey(tmp / "valkey")
        )
        self.store = self.valkey.client()
        self.port = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.out = (tmp / "children.log").open("ab")
        # hooks for bench/profile.py
        self.on_service: Any = None
        self.on_consumers: Any = None

    def env(self, consumers: int, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "REDIS_URL": self.valkey.url,
            "PORT": str(self.port),
            "WEB_CONCURRENCY": "2",
            "CONSUMERS": str(consumers),
            "CONSUMER_CONCURRENCY": "8",
            "POOLS": "",
            "NODE_NAME": NODE,
            "DATA_DIR": str(self.tmp / "data"),
            "JOB_MODULES": "benchjobs",
            "LOG_LEVEL": "WARNING",
            # the growth phase holds GROWTH_WAITING jobs, as many as the default limit
            "BACKLOG_LIMIT": str(10 * GROWTH_WAITING),
            "PYTHONPATH": f"{HERE}:{ROOT}",
            **extra,
        }

    def spawn(self, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self.out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def service(self, consumers: int) -> subprocess.Popen[bytes]:
        proc = self.spawn([sys.executable, "-m", "supervisor"], self.env(consumers))
        import httpx

        def up() -> bool:
            return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200

        wait_for(up, 30, 0.05, "the service")
        if consumers:
            wait_for(lambda: self.live() == consumers, 30, 0.05, "consumers")
        if self.on_service:
            self.on_service(proc)
        return proc

    def live(self) -> int:
        return int(
            self.store.zcount(Keys(PREFIX).workers("default"), int(time.time() * 1000), "+inf")
        )

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        tree = [proc.pid, *children(proc.pid)]
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        for pid in tree:
            kill_tree(pid)

    def fake_consumers(self, count: int = 2) -> None:
        """Register consumer ids as live without running them: enqueue-only phases."""
        far = int(time.time() * 1000) + 3_600_000
        ids = {f"{NODE}-default-{i}": far for i in range(1, count + 1)}
        keys = Keys(PREFIX)
        self.store.zadd(keys.workers("default"), ids)  # type: ignore[arg-type]
        self.store.zadd(keys.load("default"), dict.fromkeys(ids, 0))  # they hold nothing yet

    def fill(self, jobs: int) -> float:
        """Enqueue `jobs` noop jobs through the queue API, 1,000 at a time; the seconds it took."""
        settings = Settings.from_env(self.env(0))

        async def go() -> float:
            from jobs import registry

            registry.load(settings.job_modules)
            queue = Queue.from_settings(settings)
            start = time.monotonic()
            for i in range(0, jobs, 1000):
                n = min(1000, jobs - i)
                await asyncio.gather(*(queue.enqueue("noop", {"n": 1}) for _ in range(n)))
            elapsed = time.monotonic() - start
            await queue.close()
            return elapsed

        return asyncio.run(go())

    def wrk(self, seconds: int) -> dict[str, Any]:
        args = wrk_command(self.port, seconds)
        done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30)
        return wrk_summary(done.stdout)

    def counter(self, name: str) -> int:
        return int(self.store.hget(Keys(PREFIX).stats, name) or 0)

    def waiting(self) -> int:
        return sum(int(self.store.zcard(Keys(PREFIX).ready(f"{NODE}-default-{i}"))) for i in (1, 2))

    # phases

    def enqueue(self) -> dict[str, Any]:
        self.store.flushall()
        self.fake_consumers()
        proc = self.service(0)
        try:
            self.wrk(self.warmup_s)
            self.store.flushall()
            self.fake_consumers()
            workers = sorted(children(proc.pid))
            before = [cpu_seconds(pid) for pid in workers]
            result = self.wrk(self.wrk_s)
            used = [cpu_seconds(pid) - b for pid, b in zip(workers, before, strict=True)]
            result["http_cpu_s"] = [round(u, 2) for u in used]
            time.sleep(1)
            result["queue_waiting"] = self.waiting()
            return result
        finally:
            self.stop(proc)

    def drain(self) -> dict[str, Any]:
        self.store.flushall()
        self.fake_consumers()
        bulk_s = self.fill(self.drain_jobs)
        code = (
            "import sys; from jobs import consumer, registry, settings;"
            "s = settings.Settings.from_env(); registry.load(s.job_modules);"
            "consumer.run(sys.argv[1], 'default', s, sys.argv[2])"
        )
        started = time.monotonic()
        consumers = [
            self.spawn(
                [sys.executable, "-c", code, f"{NODE}-default-{i}", f"bench{i}"], self.env(2)
            )
            for i in (1, 2)
        ]
        if self.on_consumers:
            self.on_consumers(consumers)
        ready: dict[int, float] = {}
        valkey_before = cpu_seconds(self.valkey.proc.pid)
        try:
            deadline = started + 300
            while self.counter("completed") < self.drain_jobs:
                for i in (1, 2):
                    key = Keys(PREFIX).worker(f"{NODE}-default-{i}")
                    if i not in ready and self.store.hget(key, "instance") == f"bench{i}":
                        ready[i] = time.monotonic()
                if time.monotonic() > deadline:
                    raise TimeoutError("the drain took over 300 s")
                time.sleep(0.002)
            elapsed = time.monotonic() - started
            from_ready = time.monotonic() - min(ready.values(), default=started)
            cpu = [round(cpu_seconds(p.pid), 2) for p in consumers]
            valkey_cpu = round(cpu_seconds(self.valkey.proc.pid) - valkey_before, 2)
        finally:
            for proc in consumers:
                self.stop(proc)
        return {
            "jobs": self.drain_jobs,
            "drain_jps": round(self.drain_jobs / elapsed, 1),
            "drain_jps_from_ready": round(self.drain_jobs / from_ready, 1),
            "seconds": round(elapsed, 3),
            "enqueue_api_jps": round(self.drain_jobs / bulk_s, 1),
            "waiting_after": self.waiting(),
            "consumer_cpu_s": cpu,
            "valkey_cpu_s": valkey_cpu,
        }

    def e2e(self) -> dict[str, Any]:
        self.store.flushall()
        proc = self.service(2)
        try:
            time.sleep(3)
            tree = [proc.pid, *children(proc.pid)]
            idle = rss_mb(tree)
            self.wrk(self.warmup_s)
            wait_for(lambda: self.waiting() == 0, 60, 0.05, "warm-up jobs consumed")
            before = self.counter("completed")
            t0 = time.monotonic()
            result = self.wrk(self.wrk_s)
            window = time.monotonic() - t0
            completed = self.counter("completed") - before
            result["completed_jps"] = round(completed / window, 1)
            result["backlog_waiting"] = self.waiting()
            result["idle_rss_mb"] = idle
            wait_for(lambda: self.waiting() == 0, 120, 0.1, "the backlog")
            latency = self.pickup(proc)
            time.sleep(2)
            result["rss_after_load_mb"] = rss_mb([proc.pid, *children(proc.pid)])
            result["pickup"] = latency
            return result
        finally:
            self.stop(proc)

    def pickup(self, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
        """Open loop: 200 jobs/s for latency_s seconds, from a producer process using the API."""
        code = f"""
import asyncio, time, sys
from jobs import registry
from jobs.queue import Queue
from jobs.settings import Settings
registry.load(("benchjobs",))
async def main():
    q = Queue.from_settings(Settings.from_env())
    # connected, and through a first enqueue (it imports what it uses), before the first sample:
    # the peer's producer waits until its queue is ready
    await q.enqueue("noop", {{}})
    n, rate = {200 * self.latency_s}, 200
    t0 = time.monotonic() + 0.2
    tasks = []
    for i in range(n):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(q.enqueue("pickup", {{"t": time.time()}})))
    await asyncio.gather(*tasks)
asyncio.run(main())
"""
        self.store.delete("bench:pickup")
        producer = self.spawn([sys.executable, "-c", code], self.env(2))
        producer.wait(self.latency_s + 60)
        n = 200 * self.latency_s
        wait_for(lambda: self.store.llen("bench:pickup") >= n, 60, 0.05, "pickup samples")
        samples = sorted(float(x) * 1000 for x in self.store.lrange("bench:pickup", 0, -1))

        def pct(p: float) -> float:
            return round(
                samples[min(len(samples) - 1, max(0, int(p / 100 * len(samples) + 0.5) - 1))], 2
            )

        return {
            "samples": len(samples),
            "p50_ms": pct(50),
            "p99_ms": pct(99),
            "max_ms": round(samples[-1], 2),
        }

    def stats_ms(self, times: int = 50) -> float:
        import httpx

        url = f"http://127.0.0.1:{self.port}/queue/stats"
        spent = []
        with httpx.Client() as client:
            for _ in range(times):
                t0 = time.perf_counter()
                client.get(url).raise_for_status()
                spent.append(time.perf_counter() - t0)
        return round(sorted(spent)[len(spent) // 2] * 1000, 2)

    def growth(self) -> dict[str, Any]:
        """Enqueue and /queue/stats over 2 registered consumers with an empty queue, then over
        GROWTH_CONSUMERS with an empty queue and with growth_waiting jobs waiting: back to
        back, so that their ratios compare like with like."""
        out: dict[str, Any] = {}
        for label, consumers in (
            ("two", 2),
            ("empty", GROWTH_CONSUMERS),
            ("waiting", GROWTH_CONSUMERS),
        ):
            self.store.flushall()
            self.fake_consumers(consumers)
            if label == "waiting":
                self.fill(self.growth_waiting)
            proc = self.service(0)
            try:
                self.wrk(self.warmup_s)
                result = self.wrk(self.wrk_s)
                out[label] = {
                    "enqueue_rps": result["rps_2xx"],
                    "enqueue_p99_ms": result["latency_ms"]["p99"],
                    "stats_ms": self.stats_ms(),
                }
            finally:
                self.stop(proc)
        return out

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                kill_tree(proc.pid)
        self.store.close()
        self.valkey.stop()


PHASES = ("enqueue", "drain", "e2e", "growth")


def measure(quick: bool) -> dict[str, dict[str, Any]]:
    """Every phase on each persistence setting, the settings taken in turns phase by phase
    (the first of a phase goes second in the next): the VM's speed drifts over minutes, and
    the settings must compare within one stretch of it."""
    with tempfile.TemporaryDirectory(prefix="mq-bench-") as tmp:
        runs: dict[str, Run] = {}
        try:
            for setting in PERSISTENCE:
                (Path(tmp) / setting).mkdir()
                runs[setting] = Run(quick, Path(tmp) / setting, setting)
            results: dict[str, dict[str, Any]] = {s: {} for s in PERSISTENCE}
            for i, phase in enumerate(PHASES):
                for setting in PERSISTENCE if i % 2 == 0 else PERSISTENCE[::-1]:
                    log(f"[{setting}] phase {i + 1}: {phase}")
                    results[setting][phase] = getattr(runs[setting], phase)()
                    runs[setting].store.flushall()  # an idle store holds nothing to rewrite
        finally:
            for run in runs.values():
                run.close()
    return {s: summary(quick, **results[s]) for s in PERSISTENCE}


def summary(
    quick: bool, enqueue: dict[str, Any], drain: dict[str, Any], e2e: dict[str, Any],
    growth: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    return {
        "enqueue_rps": enqueue["rps_2xx"],
        "drain_jps": drain["drain_jps"],
        "drain_jps_from_ready": drain["drain_jps_from_ready"],
        "e2e_accepted_rps": e2e["rps_2xx"],
        "e2e_completed_jps": e2e["completed_jps"],
        "pickup_p50_ms": e2e["pickup"]["p50_ms"],
        "pickup_p99_ms": e2e["pickup"]["p99_ms"],
        "idle_rss_mb": e2e["idle_rss_mb"],
        "growth_enqueue": round(
            growth["waiting"]["enqueue_rps"] / growth["empty"]["enqueue_rps"], 2
        ),
        "growth_consumers": round(growth["empty"]["enqueue_rps"] / growth["two"]["enqueue_rps"], 2),
        "growth_stats": round(growth["empty"]["stats_ms"] / growth["waiting"]["stats_ms"], 2),
        "detail": {"enqueue": enqueue, "drain": drain, "e2e": e2e, "growth": growth},
        "host": {"loadavg_start": os.getloadavg(), "cpus": os.cpu_count()},
        "mode": "quick" if quick else "full",
    }


# figure, its key in the peer's output (None: ours only), whether higher is better
ROWS = [
    ("HTTP enqueue/s", "enqueue_rps", "enqueue_rps", True),
    ("drain jobs/s (from spawn)", "drain_jps", "drain_jps", True),
    ("drain jobs/s (from ready)", "drain_jps_from_ready", "drain_jps_from_ready", True),
    ("e2e completed/s", "e2e_completed_jps", "e2e_completed_jps", True),
    ("pickup p50 ms", "pickup_p50_ms", "pickup_p50_ms", False),
    ("pickup p99 ms", "pickup_p99_ms", "pickup_p99_ms", False),
    ("idle memory MB", "idle_rss_mb", "idle_rss_mb", False),
    ("enqueue, waiting / empty", "growth_enqueue", None, True),
    ("/queue/stats, empty / waiting", "growth_stats", None, True),
    (f"enqueue, {GROWTH_CONSUMERS} consumers / 2", "growth_consumers", None, True),
]


def table(out: dict[str, Any]) -> str:
    """One row per figure; a ratio is ours against BullMQ's, above 1.0 better for us."""
    peer = out.get("bullmq", {})
    head = "| figure | BullMQ | ours: none | ratio | ours: aof | ratio |"
    lines = [head, "|---|---|---|---|---|---|"]
    for label, key, peer_key, higher in ROWS:
        theirs = peer.get(peer_key) if peer_key else None
        cells = [label, "" if theirs is None else f"{theirs:,}"]
        for setting in PERSISTENCE:
            ours = out["ours"][setting][key]
            ratio = ""
            if theirs and ours:
                ratio = f"{(ours / theirs if higher else theirs / ours):.2f}"
            cells += [f"{ours:,}", ratio]
        lines.append("| " + " | ".join(cells) + " |")
    runs = out.get("bullmq_runs", [])
    if len(runs) == 2:
        moved = [
            f"{label} {runs[0][peer_key]} / {runs[1][peer_key]}"
            for label, _, peer_key, _ in ROWS
            if peer_key and peer_key != "idle_rss_mb"
        ]
        lines.append("\nBullMQ before / after ours: " + "; ".join(moved))
    return "\n".join(lines)


PEER_FIGURES = ("enqueue_rps", "drain_jps", "e2e_accepted_rps", "e2e_completed_jps",
                "pickup_p50_ms", "pickup_p99_ms", "idle_rss_mb")  # fmt: skip


def peer_figures(quick: bool) -> dict[str, Any]:
    """One run of the BullMQ peer (`run.sh`): its figures."""
    log("running the BullMQ peer")
    cmd = [str(PEER / "run.sh"), *(["--quick"] if quick else [])]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    peer = json.loads(
        subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    )
    figures = {key: peer.get(key) for key in PEER_FIGURES}
    figures["drain_jps_from_ready"] = peer.get("drain", {}).get("jps_from_ready")
    return figures


def mean(values: Any) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known) / len(known), 3) if known else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument(
        "--peer",
        action="store_true",
        help="run the BullMQ peer before and after ours; ratios against the mean of the two",
    )
    args = parser.parse_args()
    debian_tool("wrk", "wrk")  # the peer's run.sh needs it too
    out: dict[str, Any] = {}
    if args.peer:
        out["bullmq_runs"] = [peer_figures(args.quick)]
    out["ours"] = measure(args.quick)
    out["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = HERE / f"results{'-quick' if args.quick else ''}.json"
    results.write_text(json.dumps(out, indent=2))  # kept if the second peer run fails
    if args.peer:
        out["bullmq_runs"].append(peer_figures(args.quick))
        out["bullmq"] = {
            key: mean(run[key] for run in out["bullmq_runs"]) for key in out["bullmq_runs"][0]
        }
    results.write_text(json.dumps(out, indent=2))
    print(table(out))


if __name__ == "__main__":
    main()

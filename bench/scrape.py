"""The cost of one /metrics scrape while N jobs wait; prints one JSON object.

    .venv/bin/python bench/scrape.py                 # 100,000 waiting jobs
    .venv/bin/python bench/scrape.py --jobs 10000

Every consumer slot of the default pool runs a `hold` job, so the noop jobs enqueued after
them wait in the consumers' queues. Measured with the default process counts (one HTTP
worker and one consumer per core, the default extra pools) and with 8 consumers. The
median of several scrapes; every process started here is stopped by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers import Valkey, children, free_port, kill_tree, wait_for  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from jobs import registry  # noqa: E402
from jobs.queue import Queue  # noqa: E402
from jobs.settings import Settings  # noqa: E402

SCRAPES = 9
BATCH = 1000


def log(*parts: object) -> None:
    print(f"[scrape {time.strftime('%H:%M:%S')}]", *parts, file=sys.stderr, flush=True)


def gauge(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("pool") == "default":
                return float(sample.value)
    return -1.0


class Bench:
    def __init__(self, tmp: Path, jobs: int) -> None:
        self.tmp = tmp
        self.jobs = jobs
        self.valkey = Valkey(tmp / "valkey")
        self.out = (tmp / "service.log").open("ab")

    def env(self, consumers: int | None) -> dict[str, str]:
        env = {
            **os.environ,
            "REDIS_URL": self.valkey.url,
            "PORT": str(free_port()),
            "DATA_DIR": str(self.tmp / "data"),
            "JOB_MODULES": "benchjobs",
            "BACKLOG_LIMIT": str(self.jobs + 10_000),
            "GRACEFUL_TIMEOUT": "1",
            "LOG_LEVEL": "WARNING",
            "NODE_NAME": "scrape",
            "PYTHONPATH": f"{HERE}:{ROOT}",
        }
        for name in ("WEB_CONCURRENCY", "CONSUMERS", "POOLS", "CONSUMER_CONCURRENCY"):
            env.pop(name, None)  # the defaults
        if consumers is not None:
            env["CONSUMERS"] = str(consumers)
        return env

    async def fill(self, settings: Settings, slots: int) -> None:
        queue = Queue.from_settings(settings)
        try:
            await asyncio.gather(*(queue.enqueue("hold", {"seconds": 600}) for _ in range(slots)))
            await self.wait_gauge(settings, "mq_queue_active", slots)
            for start in range(0, self.jobs, BATCH):
                count = min(BATCH, self.jobs - start)
                await asyncio.gather(*(queue.enqueue("noop", {"n": 1}) for _ in range(count)))
        finally:
            await queue.close()

    async def wait_gauge(self, settings: Settings, name: str, value: int) -> None:
        url = f"http://127.0.0.1:{settings.port}/metrics"
        async with httpx.AsyncClient(timeout=30) as client:
            deadline = time.monotonic() + 60
            while gauge((await client.get(url)).text, name) != value:
                if time.monotonic() > deadline:
                    text = (await client.get(url)).text
                    raise AssertionError(f"{name} never reached {value}: {gauge(text, name)}")
                await asyncio.sleep(0.1)

    def case(self, consumers: int | None) -> dict[str, Any]:
        self.valkey.client().flushall()
        env = self.env(consumers)
        settings = Settings.from_env(env)
        slots = settings.pools["default"] * settings.consumer_concurrency
        proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor"],
            cwd=ROOT, env=env, stdout=self.out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        url = f"http://127.0.0.1:{settings.port}"
        try:
            with httpx.Client(base_url=url, timeout=30) as http:
                wait_for(lambda: http.get("/ready").status_code == 200, 60, 0.1, "the service")
                log(f"{settings.pools['default']} consumers: filling {self.jobs} waiting jobs")
                asyncio.run(self.fill(settings, slots))
                asyncio.run(self.wait_gauge(settings, "mq_queue_waiting", self.jobs))
                http.get("/metrics")
                times, sizes = [], []
                for _ in range(SCRAPES):
                    started = time.perf_counter()
                    r = http.get("/metrics")
                    times.append(time.perf_counter() - started)
                    sizes.append(len(r.content))
                    assert r.status_code == 200 and b"mq_redis_up 1.0" in r.content
            return {
                "http_workers": settings.web_concurrency,
                "consumers": sum(settings.pools.values()),
                "consumers_default_pool": settings.pools["default"],
                "waiting_jobs": self.jobs,
                "bytes": statistics.median(sizes),
                "median_ms": round(statistics.median(times) * 1000, 2),
                "max_ms": round(max(times) * 1000, 2),
            }
        except BaseException:
            log("service log:\n" + (self.tmp / "service.log").read_text()[-3000:])
            raise
        finally:
            tree = [proc.pid, *children(proc.pid)]
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
            for pid in tree:
                kill_tree(pid)

    def close(self) -> None:
        self.out.close()
        self.valkey.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100_000, help="waiting jobs (100000)")
    args = parser.parse_args()
    registry.load(("benchjobs",))
    with tempfile.TemporaryDirectory(prefix="mq-scrape-") as tmp:
        bench = Bench(Path(tmp), args.jobs)
        try:
            out = {"default": bench.case(None), "consumers_8": bench.case(8)}
        finally:
            bench.close()
    out["host"] = {"cpus": os.cpu_count(), "loadavg": os.getloadavg()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

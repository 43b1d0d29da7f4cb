"""/metrics on a running service, checked by promtool and scraped by a real Prometheus."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import redis
from helpers import ROOT, Service, Valkey, debian_tool, free_port, wait_for
from prometheus_client.parser import text_string_to_metric_families

from jobs.connection import async_client
from jobs.settings import Settings
from jobs.store import Keys, Store, calls, gauges

FAMILIES = (
    "mq_http_requests_total", "mq_http_request_duration_seconds", "mq_jobs_enqueued_total",
    "mq_jobs_started_total", "mq_jobs_completed_total", "mq_job_failures_total",
    "mq_jobs_retried_total", "mq_jobs_dead_lettered_total", "mq_jobs_cancelled_total",
    "mq_job_duration_seconds", "mq_job_pickup_seconds", "mq_child_restarts_total",
    "mq_embedded_server_up", "mq_redis_up", "mq_queue_waiting", "mq_queue_active",
    "mq_queue_delayed", "mq_queue_oldest_waiting_age_seconds", "mq_consumers_live",
    "mq_dlq_size",
)  # fmt: skip
ENV = {"JOB_MODULES": "testjobs", "POOLS": "", "CONSUMERS": 1, "CONSUMER_CONCURRENCY": 1}


class Scrape:
    """One /metrics page, parsed."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def value(self, sample: str, **labels: str) -> float | None:
        """The sum of the samples named `sample` whose labels include `labels`; None if none."""
        found = [
            s.value
            for f in self.families.values()
            for s in f.samples
            if s.name == sample and labels.items() <= s.labels.items()
        ]
        return sum(found) if found else None

    def names(self) -> set[str]:
        # the parser names a counter family without its _total
        return {f"{n}_total" if f.type == "counter" else n for n, f in self.families.items()}


def scrape(svc: Service) -> Scrape:
    r = svc.http.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return Scrape(r.text)


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    tool = debian_tool("promtool", "prometheus")
    return subprocess.run(
        [tool, *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def job_counts(page: Scrape, name: str, job: str) -> float | None:
    return page.value(name, pool="default", job_name=job)


def test_metrics_count_every_family_right_and_promtool_finds_nothing_wrong(
    data_dir: Path,
) -> None:
    svc = Service(data_dir, **ENV, MAX_CRASHES=1)
    try:
        svc.start()
        done = svc.enqueue("noop")
        dead = svc.enqueue("flaky", {}, attempts=1)
        retried = svc.enqueue(
            "flaky", {"succeed_on": 2}, attempts=2, backoff={"type": "fixed", "delay": 0}
        )
        svc.wait_status(done, "completed")
        svc.wait_status(dead, "dead")
        svc.wait_status(retried, "completed")
        svc.enqueue("noop", delay=3600)

        # the only slot busy: two jobs wait in its queue
        sleeper = svc.enqueue("sleeper", {"seconds": 60})
        svc.wait_status(sleeper, "active")
        behind = [svc.enqueue("noop") for _ in range(2)]

        def backlog() -> Scrape | None:
            page = scrape(svc)
            lag = page.value("mq_queue_oldest_waiting_age_seconds", pool="default") or 0
            return page if lag >= 0.2 else None

        page = wait_for(backlog, 10, 0.1, "a queue lag")
        assert page.value("mq_queue_waiting", pool="default") == 2
        assert page.value("mq_queue_active", pool="default") == 1
        assert page.value("mq_queue_delayed", pool="default") == 1
        assert page.value("mq_consumers_live", pool="default") == 1
        assert page.value("mq_dlq_size") == 1
        assert page.value("mq_redis_up") == 1
        assert page.value("mq_queue_oldest_waiting_age_seconds", pool="default") < 30

        assert svc.http.delete(f"/jobs/{sleeper}").status_code == 200
        svc.wait_status(sleeper, "cancelled")
        for job in behind:
            svc.wait_status(job, "completed")
        assert svc.http.get("/no/such/page").status_code == 404

        # replaced children are counted, and their counts are kept; the job the consumer ran
        # when it died is dead-lettered by the crash (MAX_CRASHES=1) and counted so
        crashed = svc.enqueue("sleeper", {"seconds": 60})
        svc.wait_status(crashed, "active")
        (consumer,) = svc.roles()["consumer"]
        os.kill(consumer, signal.SIGKILL)
        svc.wait_status(crashed, "dead")
        os.kill(svc.roles()["http"][0], signal.SIGKILL)

        def restarts() -> dict[str, float | None]:
            page = scrape(svc)
            return {k: page.value("mq_child_restarts_total", kind=k) for k in ("consumer", "http")}

        wait_for(lambda: restarts() == {"consumer": 1, "http": 1}, 20, 0.1, "restarts counted")
        wait_for(lambda: scrape(svc).value("mq_consumers_live", pool="default") == 1, 20, 0.1)
        page = scrape(svc)

        assert set(FAMILIES) <= page.names(), set(FAMILIES) - page.names()
        expected = {
            "mq_jobs_enqueued_total": {"noop": 4, "flaky": 2, "sleeper": 2},
            "mq_jobs_started_total": {"noop": 3, "flaky": 3, "sleeper": 2},
            "mq_jobs_completed_total": {"noop": 3, "flaky": 1, "sleeper": None},
            "mq_job_failures_total": {"noop": None, "flaky": 2},
            "mq_jobs_retried_total": {"flaky": 1},
            "mq_jobs_dead_lettered_total": {"flaky": 1, "sleeper": 1},
            "mq_jobs_cancelled_total": {"sleeper": 1, "noop": None},
            "mq_job_duration_seconds_count": {"noop": 3, "flaky": 3, "sleeper": 1},
            "mq_job_pickup_seconds_count": {"noop": 3, "flaky": 3, "sleeper": 2},
        }
        got = {
            name: {job: job_counts(page, name, job) for job in jobs}
            for name, jobs in expected.items()
        }
        assert got == expected
        assert page.value("mq_http_requests_total", route="/enqueue-task", status="202") == 8
        assert page.value("mq_http_requests_total", route="/jobs/{job_id}", method="DELETE") == 1
        assert page.value("mq_http_requests_total", route="other", status="404") == 1
        assert page.value("mq_http_request_duration_seconds_count", route="/metrics") >= 1
        assert page.value("mq_child_restarts_total", kind="server") is None
        assert page.value("mq_embedded_server_up") == 1
        assert page.value("mq_queue_waiting", pool="default") == 0
        assert page.value("mq_queue_active", pool="default") == 0

        checked = promtool("check", "metrics", stdin=page.text)
        assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")

        # the embedded server dies: replaced, counted, and up again
        (server,) = svc.roles()["server"]
        os.kill(server, signal.SIGKILL)

        def server_back() -> bool:
            page = scrape(svc)
            return (
                page.value("mq_child_restarts_total", kind="server") == 1
                and page.value("mq_embedded_server_up") == 1
                and page.value("mq_redis_up") == 1
            )

        wait_for(server_back, 30, 0.1, "the embedded server replaced")
    finally:
        svc.stop()


def test_metrics_answer_200_with_redis_up_0_while_the_store_is_down(
    data_dir: Path, tmp_path: Path
) -> None:
    valkey = Valkey(tmp_path / "valkey")
    svc = Service(data_dir, REDIS_URL=valkey.url, **ENV)
    try:
        svc.start()
        svc.wait_status(svc.enqueue("noop"), "completed")
        wait_for(lambda: job_counts(scrape(svc), "mq_jobs_completed_total", "noop") == 1)
        valkey.stop()
        page = scrape(svc)
        assert page.value("mq_redis_up") == 0
        assert page.value("mq_queue_waiting") is None and page.value("mq_dlq_size") is None
        assert job_counts(page, "mq_jobs_completed_total", "noop") == 1
        assert page.value("mq_embedded_server_up") is None  # there is none
        checked = promtool("check", "metrics", stdin=page.text)
        assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")
        valkey = Valkey(tmp_path / "valkey", port=valkey.port)
        wait_for(lambda: scrape(svc).value("mq_redis_up") == 1, 20, 0.1, "the store back")
    finally:
        svc.stop()
        valkey.stop()


def test_the_queue_lag_is_the_oldest_head_whatever_its_priority_or_a_due_delayed_job(
    valkey: Valkey, store: redis.Redis
) -> None:
    settings = Settings.from_env({"REDIS_URL": valkey.url, "POOLS": "", "CONSUMERS": "1"})
    keys = Keys(settings.pool_prefix("default"))

    async def scenario() -> tuple[gauges.Gauges, gauges.Gauges]:
        client = async_client(settings)
        try:
            jobs = Store(client, settings)
            now = await jobs.server_ms()
            register = calls.register(keys, settings, cid="t-default-1", pool="default",
                                      instance="t", info="{}", now=now)  # fmt: skip
            assert (await jobs.run(register)).ok

            async def put(ident: str, ago_ms: int, priority: int = 0, delay_ms: int = 0) -> None:
                call = calls.enqueue(
                    keys, settings, job_id=ident, name="noop", pool="default", data="{}",
                    delay_ms=delay_ms, priority=priority, attempts=1, timeout=1, backoff="{}",
                    now=now - ago_ms,
                )  # fmt: skip
                assert (await jobs.run(call)).outcome == "created"

            await put("urgent", 60_000, priority=5)  # the head of the queue: first to run
            await put("recent", 10_000)
            await put("later", 0, delay_ms=3_600_000)
            before = await gauges.read(client, jobs.at, ["default"])
            await put("due", 100_000, delay_ms=20_000)  # due 80 s ago
            return before, await gauges.read(client, jobs.at, ["default"])
        finally:
            await client.aclose()

    before, after = asyncio.run(scenario())
    assert before.dlq == 0 and after.dlq == 0
    (pool,) = before.pools.values()
    assert (pool.waiting, pool.active, pool.delayed, pool.live) == (2, 0, 1, 1)
    assert 60 <= pool.oldest_age < 62
    (pool,) = after.pools.values()
    assert (pool.waiting, pool.active, pool.delayed, pool.live) == (3, 0, 1, 1)
    assert 80 <= pool.oldest_age < 82


def query(api: httpx.Client, expr: str) -> list[dict[str, Any]]:
    r = api.get("/api/v1/query", params={"query": expr})
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def dashboard_queries() -> list[str]:
    board = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    grafana = {"$__rate_interval": "1m", "$__interval": "15s", '"$pool"': '".*"'}
    out = []
    for panel in board["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in grafana.items():
                expr = expr.replace(variable, value)
            out.append(expr)
    return out


def test_a_prometheus_server_scrapes_the_service_and_loads_the_alert_rules(
    data_dir: Path, tmp_path: Path
) -> None:
    binary = debian_tool("prometheus", "prometheus")
    svc = Service(data_dir, **ENV)
    prometheus: subprocess.Popen[bytes] | None = None
    port = free_port()
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        svc.start()
        svc.wait_status(svc.enqueue("noop"), "completed")
        config = tmp_path / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(ROOT / "deploy" / "alerts.yml")],
                    "scrape_configs": [
                        {
                            "job_name": "mq-service",
                            "static_configs": [{"targets": [f"127.0.0.1:{svc.port}"]}],
                        }
                    ],
                }
            )
        )
        with (tmp_path / "prometheus.log").open("wb") as log:
            prometheus = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip

        def scraped() -> bool:
            up = query(api, 'up{job="mq-service"}')
            done = query(api, 'mq_jobs_completed_total{job_name="noop"}')
            return bool(up and up[0]["value"][1] == "1" and done and done[0]["value"][1] == "1")

        wait_for(scraped, 60, 0.5, "prometheus to scrape the service")
        assert query(api, 'mq_consumers_live{pool="default"}')[0]["value"][1] == "1"

        def evaluated() -> list[dict[str, Any]]:
            groups = api.get("/api/v1/rules").json()["data"]["groups"]
            rules: list[dict[str, Any]] = [r for g in groups for r in g["rules"]]
            never = [r for r in rules if r.get("lastEvaluation", "0001").startswith("0001")]
            return rules if rules and not never else []

        rules = wait_for(evaluated, 30, 0.5, "the alert rules evaluated")
        assert len(rules) == 6 and {r["health"] for r in rules} == {"ok"}, rules
        firing = [r["name"] for r in rules if r["state"] != "inactive"]
        assert firing == [], firing
        for expr in dashboard_queries():
            query(api, expr)
    finally:
        if prometheus is not None:
            prometheus.terminate()
            try:
                prometheus.wait(15)
            except subprocess.TimeoutExpired:
                prometheus.kill()
                prometheus.wait(5)
        api.close()
        svc.stop()


def test_promtool_finds_the_deploy_config_and_alert_rules_valid() -> None:
    for args in (
        ("check", "config", "deploy/prometheus.yml"),
        ("check", "rules", "deploy/alerts.yml"),
    ):
        checked = promtool(*args)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "SUCCESS" in checked.stdout and "WARNING" not in checked.stdout + checked.stderr

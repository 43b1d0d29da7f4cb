"""A child that keeps crashing at start-up is retried with growing delays; the master stays."""

from __future__ import annotations

import json
import re
from pathlib import Path

from helpers import Service, alive, wait_for


def restart_delays(service: Service) -> list[float]:
    delays = []
    for line in service.log_path.read_text().splitlines():
        if not line.startswith("{"):
            continue
        message = json.loads(line).get("message", "")
        found = re.search(r"test-default-1 keeps dying at start-up; restart in ([\d.]+)s", message)
        if found:
            delays.append(float(found.group(1)))
    return delays


def test_consumer_crashing_at_start_up_backs_off_and_master_survives(data_dir: Path) -> None:
    svc = Service(data_dir, CONSUMERS=1, POOLS="", JOB_MODULES="crashing_consumer")
    try:
        svc.start(ready=False)
        wait_for(lambda: len(restart_delays(svc)) >= 3, 30, 0.2, "three backed-off restarts")
        delays = restart_delays(svc)
        assert delays[:3] == sorted(delays[:3]) and delays[0] < delays[2]
        assert alive(svc.pid)
        assert svc.http.get("/health").status_code == 200
        ready = svc.http.get("/ready")
        assert ready.status_code == 503 and "consumer" in ready.json()["detail"]
    finally:
        svc.stop()


def test_ready_waits_for_a_consumer_in_every_pool_this_node_serves(data_dir: Path) -> None:
    svc = Service(
        data_dir, CONSUMERS=1, POOLS="worker1:1,worker2:1", JOB_MODULES="one_pool_crashes"
    )
    try:
        svc.start(ready=False)

        def default_takes_jobs() -> bool:
            r = svc.http.post("/enqueue-task", json={"jobName": "noop", "data": {}})
            return r.status_code == 202

        wait_for(default_takes_jobs, 30, 0.1, "the default pool to take a job")
        worker1 = {"jobName": "noop", "data": {}, "options": {"queue": "worker1"}}
        wait_for(
            lambda: svc.http.post("/enqueue-task", json=worker1).status_code == 202,
            30,
            0.1,
            "pool worker1 to take a job",
        )
        ready = svc.http.get("/ready")
        assert ready.status_code == 503, ready.text
        assert "worker2" in ready.json()["detail"] and "worker1" not in ready.json()["detail"]
    finally:
        svc.stop()

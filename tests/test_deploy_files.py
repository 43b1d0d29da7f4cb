"""The files in deploy/: Compose runs replicas behind nginx with one Valkey, Prometheus and
Grafana; the Kubernetes manifests pass the API's own schemas and agree with the service."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helpers import ROOT

from jobs.metrics import StoreCollector
from jobs.settings import DEFAULT_POOL, Settings
from jobs.store.gauges import Gauges, PoolGauges

DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = load(DEPLOY / "compose.yaml")["services"]
    return services


def with_default(value: str | int) -> str:
    """A Compose value as it reads with no variable set: `${MQ_REPLICAS:-3}` is 3."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))


def seconds(duration: str) -> float:
    """A Compose duration such as `40s` or `1m30s`."""
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, duration
    return int(parts[1] or 0) * 60 + int(parts[2] or 0)


def settings_of(env: dict[str, str]) -> Settings:
    """The settings the service reads from this environment, parsed by its own code."""
    return Settings.from_env(env)


def exported_store_metrics() -> dict[str, set[str]]:
    """The gauges /metrics reads from the store, by name, with their label names."""
    pool = PoolGauges(waiting=1, active=0, delayed=0, oldest_age=2.5, live=1)
    families = StoreCollector(Gauges({DEFAULT_POOL: pool}, dlq=0)).collect()
    return {f.name: {label for s in f.samples for label in s.labels} for f in families}


def nginx_conf() -> str:
    return re.sub(r"#.*", "", (DEPLOY / "nginx.conf").read_text())


def kubernetes_documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(KUBERNETES.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def of_kind(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in kubernetes_documents() if doc["kind"] == kind]
    assert len(found) == 1, f"{len(found)} documents of kind {kind}"
    return found[0]


def the_container() -> dict[str, Any]:
    (container,) = of_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def literal_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def pod_labels() -> dict[str, str]:
    labels: dict[str, str] = of_kind("Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def compose_command() -> list[str] | None:
    """`docker compose` (the CLI plugin), else a standalone Compose v2 binary."""
    docker = shutil.which("docker")
    if docker:
        plugin = subprocess.run([docker, "compose", "version"], capture_output=True)
        if plugin.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone:
        version = subprocess.run([standalone, "version"], capture_output=True, text=True).stdout
        if re.search(r"\bv2\.", version):
            return [standalone]
    return None


def test_the_compose_file_runs_replicas_behind_nginx() -> None:
    services = compose_services()
    mq = services["mq"]
    assert int(with_default(mq["deploy"]["replicas"])) >= 2
    # each replica takes its container's host name: a fixed NODE_NAME, host name or container
    # name would be shared by every replica, and the second master would refuse to start
    assert "NODE_NAME" not in mq["environment"]
    assert not {"hostname", "container_name", "ports"} & set(mq)
    settings = settings_of(mq["environment"])

    conf = nginx_conf()
    upstream = re.search(r"upstream\s+(\S+)\s*\{([^}]*)\}", conf)
    assert upstream, "nginx.conf has no upstream block"
    servers = re.findall(r"^\s*server\s+([^:\s]+):(\d+)", upstream[2], re.M)
    assert servers == [("mq", str(settings.port))]
    assert re.search(rf"proxy_pass\s+http://{re.escape(upstream[1])}\s*;", conf)
    assert "nginx.conf" in " ".join(services["nginx"]["volumes"])
    assert services["nginx"]["depends_on"]["mq"]["condition"] == "service_healthy"


def test_nginx_refuses_bodies_past_the_services_own_limit_in_its_error_shape() -> None:
    conf = nginx_conf()
    limit = re.search(r"client_max_body_size\s+(\d+)([kmg]?)\s*;", conf, re.I)
    assert limit, "nginx.conf sets no client_max_body_size"
    size = int(limit[1]) * UNITS[limit[2].lower()]
    assert size == settings_of(compose_services()["mq"]["environment"]).max_body_bytes
    bodies = re.findall(r"return\s+(\d+)\s+'([^']*)'", conf)
    assert {status for status, _ in bodies} >= {"413", "503"}
    for _, body in bodies:
        assert set(json.loads(body)) == {"error", "detail"}


def test_valkey_keeps_an_append_only_file_on_a_named_volume() -> None:
    services = compose_services()
    valkey = services["valkey"]
    command = " ".join(valkey["command"])
    assert "--appendonly yes" in command and "--appendfsync everysec" in command
    assert "--maxmemory-policy noeviction" in command
    volume, _, target = valkey["volumes"][0].partition(":")
    assert target == "/data" and volume in load(DEPLOY / "compose.yaml")["volumes"]
    assert services["mq"]["environment"]["REDIS_URL"].startswith("redis://valkey:")


def test_prometheus_finds_every_replica_and_loads_the_alert_rules() -> None:
    services = compose_services()
    config = load(DEPLOY / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "mq-service"]
    (dns,) = job["dns_sd_configs"]
    assert dns["names"] == ["mq"] and dns["type"] == "A"
    assert dns["port"] == settings_of(services["mq"]["environment"]).port
    assert config["rule_files"] == ["alerts.yml"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in services["prometheus"]["volumes"])
    assert mounts["./prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["./alerts.yml"] == "/etc/prometheus/alerts.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    grafana = compose_services()["grafana"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in grafana["volumes"] if v.startswith("./"))
    provisioning = DEPLOY / "grafana" / "provisioning"
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    (source,) = load(provisioning / "datasources" / "prometheus.yaml")["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    (provider,) = load(provisioning / "dashboards" / "mq-service.yaml")["providers"]
    dashboard = Path(mounts["./grafana-dashboard.json"])
    assert str(dashboard.parent) == provider["options"]["path"]
    assert json.loads((DEPLOY / "grafana-dashboard.json").read_text())["uid"] == "mq-service"


def test_every_compose_service_has_a_healthcheck_and_the_replicas_outlast_the_drain() -> None:
    services = compose_services()
    assert all("healthcheck" in s for s in services.values())
    mq = services["mq"]
    assert "/ready" in " ".join(mq["healthcheck"]["test"])
    graceful = settings_of(mq["environment"]).graceful_timeout
    assert "GRACEFUL_TIMEOUT" in mq["environment"]
    assert seconds(mq["stop_grace_period"]) > graceful


def test_docker_compose_accepts_the_compose_file() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("neither the docker compose plugin nor a Compose v2 binary is installed")
    done = subprocess.run(
        [*command, "-f", str(DEPLOY / "compose.yaml"), "config", "-q"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "doc",
    [doc for _, doc in kubernetes_documents()],
    ids=[f"{name}:{doc['kind']}" for name, doc in kubernetes_documents()],
)
def test_every_kubernetes_document_passes_the_kubernetes_schemas(doc: dict[str, Any]) -> None:
    # the strict schemas also refuse fields Kubernetes does not know (a typo is an error)
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_the_pods_are_ready_on_ready_alive_on_health_and_outlast_the_drain() -> None:
    container = the_container()
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    env = literal_env(container)
    assert "GRACEFUL_TIMEOUT" in env
    settings = settings_of(env)
    assert {p["containerPort"] for p in container["ports"]} == {settings.port}
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = of_kind("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > settings.graceful_timeout + float(pre_stop[1])
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_each_pod_is_its_own_node_against_the_shared_redis() -> None:
    env = {e["name"]: e for e in the_container()["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    ref = env["REDIS_URL"]["valueFrom"]["secretKeyRef"]
    secret = of_kind("Secret")
    assert secret["metadata"]["name"] == ref["name"] and ref["key"] in secret["stringData"]


def test_the_service_and_the_disruption_budget_select_the_deployments_pods() -> None:
    deployment, labels = of_kind("Deployment"), pod_labels()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    services = [d for _, d in kubernetes_documents() if d["kind"] == "Service"]
    (service,) = [s for s in services if s["metadata"]["name"] == deployment["metadata"]["name"]]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in the_container()["ports"]}
    budget = of_kind("PodDisruptionBudget")["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()


def test_the_autoscaler_scales_the_deployment_on_metrics_the_service_exports() -> None:
    spec = of_kind("HorizontalPodAutoscaler")["spec"]
    target = spec["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "mq-service")
    assert of_kind("Deployment")["metadata"]["name"] == target["name"]
    exported = exported_store_metrics()
    external = [m["external"] for m in spec["metrics"] if m["type"] == "External"]
    names = {m["metric"]["name"] for m in external}
    assert "mq_queue_oldest_waiting_age_seconds" in names
    for metric in external:
        labels = exported[metric["metric"]["name"]]
        assert metric["metric"]["selector"]["matchLabels"].keys() <= labels
    assert spec["minReplicas"] >= 2


def test_the_optional_keda_scaler_reads_the_same_queue_lag() -> None:
    scaled = load(KUBERNETES / "keda" / "scaledobject.yaml")
    assert scaled["spec"]["scaleTargetRef"]["name"] == of_kind("Deployment")["metadata"]["name"]
    (trigger,) = scaled["spec"]["triggers"]
    query = trigger["metadata"]["query"]
    metric = re.match(r"max\((\w+)\{", query)
    assert metric and metric[1] in exported_store_metrics(), query

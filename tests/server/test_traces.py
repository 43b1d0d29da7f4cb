"""OpenTelemetry with the `otel` extra: the enqueue and each try are spans, exported over
OTLP to a receiver on loopback; without the extra nothing of it is imported."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, running, wait_for
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP trace endpoint that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        with self.server.lock:
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    self.server.spans.extend(scope.spans)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def attributes(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = value.string_value if value.HasField("string_value") else value.int_value
    return out


def test_an_enqueue_and_each_try_are_spans_linked_as_the_messaging_conventions_say(
    data_dir: Path, receiver: Receiver
) -> None:
    env = {
        "JOB_MODULES": "testjobs",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    with running(data_dir, **env) as svc:
        r = svc.http.post(
            "/enqueue-task",
            json={
                "jobName": "traced",
                "data": {"failFirst": True},
                "options": {"backoff": {"type": "fixed", "delay": 0}},
            },
            headers={"traceparent": PARENT},
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["jobId"]
        done = svc.wait_status(job_id, "completed")

        def spans() -> list[Span]:
            with receiver.lock:
                return [
                    s for s in receiver.spans if attributes(s).get("messaging.message.id") == job_id
                ]

        wait_for(lambda: len(spans()) == 3, 15, 0.1, "the send span and two process spans")
    trace_id = bytes.fromhex(PARENT.split("-")[1])
    (send,) = [s for s in spans() if s.kind == Span.SPAN_KIND_PRODUCER]
    tries = sorted(
        (s for s in spans() if s.kind == Span.SPAN_KIND_CONSUMER),
        key=lambda s: attributes(s)["mq.job.attempt"],
    )
    assert send.name == "send default" and send.trace_id == trace_id
    assert send.parent_span_id == bytes.fromhex(PARENT.split("-")[2])
    assert attributes(send)["messaging.operation.type"] == "send"
    assert attributes(send)["messaging.destination.name"] == "default"
    # the job stores the send span's context: its tries continue from it
    assert done["traceparent"] == f"00-{trace_id.hex()}-{send.span_id.hex()}-01"
    for n, span in enumerate(tries, start=1):
        a = attributes(span)
        assert span.name == "process default" and span.trace_id == trace_id
        assert span.parent_span_id == send.span_id
        assert [link.span_id for link in span.links] == [send.span_id]
        assert a["messaging.operation.type"] == "process" and a["mq.job.attempt"] == n
        assert a["messaging.client.id"] == done["tries"][n - 1]["consumer"]
    assert tries[0].status.code == Status.STATUS_CODE_ERROR
    assert "the first try fails" in tries[0].status.message
    assert attributes(tries[0])["mq.outcome"] == "failed"
    assert tries[1].status.code != Status.STATUS_CODE_ERROR
    assert attributes(tries[1])["mq.outcome"] == "completed"
    # the job's own calls carry the second try's span on
    assert done["result"]["traceparent"] == f"00-{trace_id.hex()}-{tries[1].span_id.hex()}-01"


BLOCKED = """
import sys

sys.modules["opentelemetry"] = None  # as if the extra were not installed: import fails
import jobs.otel, jobs.consumer, jobs.queue, server.app, supervisor.__main__
assert not jobs.otel.INSTALLED
with jobs.otel.sending("default", "x", "id", "00-%s-%s-01" % ("1" * 32, "2" * 16)) as tp:
    assert tp == "00-%s-%s-01" % ("1" * 32, "2" * 16)
span = jobs.otel.processing("default", "x", "id", 1, "c", tp)
assert span.traceparent.split("-")[1] == "1" * 32 and span.traceparent != tp
span.end("completed")
assert not [m for m, v in sys.modules.items() if m.startswith("opentelemetry") and v], "imported"
print("ok")
"""


def test_without_the_extra_nothing_of_opentelemetry_is_imported() -> None:
    out = subprocess.run(
        [sys.executable, "-c", BLOCKED], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr

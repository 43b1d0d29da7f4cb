"""When opentelemetry is imported: not by `jobs.otel` itself, and by a service process as it
starts, so that its first enqueue or try does not wait for the import."""

from __future__ import annotations

import subprocess
import sys

from helpers import ROOT

PROBE = """
import sys
from jobs import otel
before = "opentelemetry.trace" in sys.modules
otel.configure("probe")
print(before, "opentelemetry.trace" in sys.modules)
"""


def test_a_service_process_imports_opentelemetry_as_it_starts_not_at_its_first_enqueue() -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}  # no OTEL_* variables: no tracing
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]

"""Lint, format and types are part of the tests."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import ROOT


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "server", "supervisor", "jobs", "tests", "bench"],
        ["ruff", "format", "--check", "server", "supervisor", "jobs", "tests", "bench"],
        ["mypy"],
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_code_is_clean(command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr

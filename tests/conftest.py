from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from helpers import Valkey


@pytest.fixture(scope="session")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Valkey]:
    """One Valkey server for the tests that need only a store (flushed between tests)."""
    server = Valkey(tmp_path_factory.mktemp("valkey"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store(valkey: Valkey) -> Iterator[redis.Redis]:
    client = valkey.client()
    client.flushall()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    # short: the embedded server's unix socket lives here
    return tmp_path / "d"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Valkey]:
    """An external Valkey of the test's own, for nodes that share it."""
    valkey = Valkey(tmp_path / "store")
    try:
        yield valkey
    finally:
        valkey.stop()

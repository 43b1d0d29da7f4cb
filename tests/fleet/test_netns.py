"""The test network itself: a host's link cuts and comes back, and nothing is left behind."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys

import pytest
from netns import network

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="network namespaces need root and iproute2",
)


def test_a_host_reaches_the_bridge_until_its_link_is_cut_and_nothing_is_left_after_a_failure() -> (
    None
):
    made: list[str] = []
    with pytest.raises(RuntimeError, match="the test failed here"), network() as net:
        host = net.host()
        made = [net.bridge, host.netns, host.veth]
        with socket.socket() as listener:
            listener.bind((net.gateway, 0))
            listener.listen()
            port = listener.getsockname()[1]
            code = f"import socket; socket.create_connection(({net.gateway!r}, {port}), timeout=1)"

            def connects() -> bool:
                run = [*host.exec(), sys.executable, "-c", code]
                return subprocess.run(run, capture_output=True, timeout=10).returncode == 0

            assert connects()
            net.cut(host)
            assert not connects()
            net.restore(host)
            assert connects()
        raise RuntimeError("the test failed here")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    spaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    present = set(re.findall(r"^\d+: ([^:@]+)", links, re.M)) | set(spaces.split())
    assert made and not present & set(made)

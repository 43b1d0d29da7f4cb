"""prometheus-client's multiprocess files: one per process and metric type. A dead process's
counters and histograms are added into one archive file per type, and its files removed, so
the directory does not grow with every restart and the totals never go back."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from prometheus_client import multiprocess
from prometheus_client.mmap_dict import MmapedDict

SUMMED = ("counter", "histogram", "summary")


def directory() -> Path | None:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(path) if path else None


def process_died(pid: int) -> None:
    """Fold the files of `pid` into the archive and remove them."""
    folder = directory()
    if folder is None or not pid:
        return
    multiprocess.mark_process_dead(pid, str(folder))
    for kind in SUMMED:
        source = folder / f"{kind}_{pid}.db"
        if not source.exists():
            continue
        archive = MmapedDict(str(folder / f"{kind}_archive.db"))
        try:
            for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(str(source)):
                total, _ = archive.read_value(key)
                archive.write_value(key, total + value, timestamp)
        finally:
            archive.close()
        source.unlink()
    for leftover in folder.glob(f"gauge_*_{pid}.db"):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()

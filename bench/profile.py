"""Profile the service under the bench's load with py-spy; print the top entries.

    .venv/bin/python bench/profile.py enqueue   # the HTTP workers under wrk
    .venv/bin/python bench/profile.py drain     # the consumers draining a queue

Needs py-spy (`pip install -e '.[bench]'`); run as root or with ptrace allowed. The load is
run.py's phase of that name; each process is sampled for the whole phase, and the entries
are functions by their own samples (self) and with what they call (total), as % of samples.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench
from helpers import children


def record(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    args = [spy, "record", "-p", str(pid), "-d", str(seconds), "-r", "200", "-f", "raw",
            "-o", str(out), "--nonblocking"]  # fmt: skip
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def top(raw: Path, n: int) -> list[str]:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        frames = [f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].split(":")[0].rstrip(")")
                  for f in stack.split(";")]  # fmt: skip
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    lines = [f"{total} samples"]
    lines += [f"  self {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(n)]
    lines += [f"  total {100 * c / total:5.1f}%  {f}" for f, c in inclusive.most_common(n)]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("phase", choices=["enqueue", "drain"])
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mq-profile-") as tmp:
        run = bench.Run(False, Path(tmp))
        spies: list[tuple[str, Path, subprocess.Popen[bytes]]] = []

        def watch(pids: dict[int, str], seconds: int) -> None:
            for pid, what in pids.items():
                out = Path(tmp) / f"{pid}.txt"
                spies.append((what, out, record(pid, seconds, out)))

        try:
            if args.phase == "enqueue":
                run.on_service = lambda proc: watch(
                    {p: f"http worker {c}" for p, c in children(proc.pid).items()},
                    run.wrk_s + run.warmup_s + 2,
                )
                print(run.enqueue())
            else:
                run.on_consumers = lambda procs: watch({p.pid: "consumer" for p in procs[:1]}, 4)
                print(run.drain())
        finally:
            for _, _, spy in spies:
                spy.wait(60)
            run.close()
        for what, out, _ in spies:
            print(f"== {what[:80]}")
            print("\n".join(top(out, args.top)) if out.exists() else "  (no profile)")


if __name__ == "__main__":
    threading.excepthook = lambda a: None
    main()

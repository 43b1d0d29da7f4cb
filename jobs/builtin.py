"""The jobs the seeds' systems ran, built in."""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
from typing import Any

from jobs.context import JobContext
from jobs.errors import JobInputError
from jobs.files import OpenBeneathError, open_beneath
from jobs.registry import job
from jobs.settings import get_settings


@job
async def noop(ctx: JobContext, data: Any) -> None:
    return None


@job("videoProcessing")
async def video_processing(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """Pretend to transcode a video for `duration` seconds (default 12), reporting progress."""
    duration = float(data.get("duration", 12))
    if not 0 <= duration <= 3600:
        raise JobInputError("duration must be between 0 and 3600 seconds")
    steps = max(1, min(100, math.ceil(duration * 4)))
    await ctx.progress(0)
    for step in range(1, steps + 1):
        await asyncio.sleep(duration / steps)
        await ctx.progress(round(100 * step / steps, 1))
    return {
        "videoId": data.get("videoId"),
        "format": data.get("format", "mp4"),
        "resolution": data.get("resolution"),
        "status": "processed",
        "duration": duration,
    }


@job
async def calculation(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """Sum, product, average, min and max of `numbers`."""
    numbers = data.get("numbers")
    if not isinstance(numbers, list) or not numbers:
        raise JobInputError("numbers must be a non-empty list")
    if not all(isinstance(n, int | float) and not isinstance(n, bool) for n in numbers):
        raise JobInputError("numbers must hold only numbers")
    if len(numbers) > 100_000:
        raise JobInputError("at most 100000 numbers")
    product = math.prod(float(n) for n in numbers)
    return {
        "operation": data.get("operation", "complex"),
        "count": len(numbers),
        "sum": math.fsum(numbers),
        "product": product if math.isfinite(product) else None,
        "average": math.fsum(numbers) / len(numbers),
        "min": min(numbers),
        "max": max(numbers),
    }


@job("dataEnrichment")
async def data_enrichment(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """The record back with fields derived from it."""
    email = data.get("email")
    out = dict(data)
    if isinstance(email, str) and "@" in email:
        local, _, domain = email.rpartition("@")
        out["emailDomain"] = domain.lower()
        out["emailLocalPart"] = local
        out["emailValid"] = bool(local) and "." in domain
    else:
        out["emailValid"] = False
    user_id = data.get("userId")
    if user_id is not None:
        out["userHash"] = hashlib.sha256(str(user_id).encode()).hexdigest()[:16]
    out["enrichedFields"] = sorted(set(out) - set(data))
    return out


@job("fileProcessing")
def file_processing(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """Digest, size and line count of `content`, or of `path` inside the files directory.

    A plain function: it reads files, so it runs in a thread.
    """
    if "content" in data:
        content = data["content"]
        if not isinstance(content, str):
            raise JobInputError("content must be a string")
        raw = content.encode()
        source = "content"
    elif "path" in data:
        relative = data["path"]
        if not isinstance(relative, str):
            raise JobInputError("path must be a string")
        try:
            # openat2 (or a descriptor walk): no symlink, `..` or FIFO anywhere on the path
            fd = open_beneath(get_settings().allowed_files_dir, relative)
        except OpenBeneathError as exc:
            raise JobInputError(str(exc)) from None
        with os.fdopen(fd, "rb") as fh:
            raw = fh.read(64 * 1024 * 1024 + 1)
        if len(raw) > 64 * 1024 * 1024:
            raise JobInputError("file is larger than 64 MiB")
        source = relative
    else:
        raise JobInputError("give content or path")
    return {
        "source": source,
        "size": len(raw),
        "lines": raw.count(b"\n") + (1 if raw and not raw.endswith(b"\n") else 0),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }


@job
async def message(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """Seed 004's job: log the message; `shouldFail` makes it fail."""
    if data.get("shouldFail"):
        raise RuntimeError(f"job asked to fail: {data.get('message')!r}")
    return {"processed": True, "message": data.get("message")}


@job(pool="worker1")
async def worker1(ctx: JobContext, data: Any) -> dict[str, Any]:
    """Seed 000's dedicated worker 1: a short task on its own pool."""
    await asyncio.sleep(float(data.get("duration", 1)) if isinstance(data, dict) else 1)
    return {"processedBy": "worker1", "data": data}


@job(pool="worker2")
async def worker2(ctx: JobContext, data: Any) -> dict[str, Any]:
    """Seed 000's dedicated worker 2."""
    await asyncio.sleep(float(data.get("duration", 1)) if isinstance(data, dict) else 1)
    return {"processedBy": "worker2", "data": data}

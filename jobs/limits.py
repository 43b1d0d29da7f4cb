"""Limits of a job's options, defined once: the JSON schemas and the Python API both use them."""

from __future__ import annotations

PRIORITY = 1000  # priorities run from -PRIORITY to PRIORITY, higher first
MAX_ATTEMPTS = 1000
MAX_TIMEOUT = 86_400.0  # seconds
MAX_DELAY = 365 * 86_400.0  # seconds
MAX_BACKOFF_DELAY = 86_400.0  # seconds, the base delay of a backoff policy
MAX_JOB_ID = 128  # characters
MAX_NAME = 128  # characters of a job name
MAX_POOL_NAME = 64
# a job id: no spaces, control characters, colons or braces (they would break key names),
# no slash, and not "." or ".." (a URL path segment could not carry them back to /jobs/{id})
JOB_ID_PATTERN = "^[^{}:/\\u0000-\\u0020\\u007f]+$"
JOB_ID_FORBIDDEN = frozenset("{}:/\x7f")
JOB_ID_RESERVED = (".", "..")
JOB_ID_RULE = (
    f"jobId must be 1-{MAX_JOB_ID} characters, without spaces, control characters, colons, "
    'braces or slashes, and not "." or ".."'
)


def valid_job_id(job_id: str) -> bool:
    return (
        0 < len(job_id) <= MAX_JOB_ID
        and job_id not in JOB_ID_RESERVED
        and not any(c in JOB_ID_FORBIDDEN or c <= " " for c in job_id)
    )


# a scheduler's id: a job id short enough that "<id>@<due ms>" is one too
MAX_SCHEDULER_ID = MAX_JOB_ID - 14
SCHEDULER_ID_RULE = (
    f"a scheduler id must be 1-{MAX_SCHEDULER_ID} characters, without spaces, control "
    'characters, colons, braces or slashes, and not "." or ".."'
)
MAX_DEDUPE_KEY = 128  # characters of options.dedupe.key
MAX_GROUP = 64  # characters of options.group

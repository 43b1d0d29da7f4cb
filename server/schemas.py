"""Request schemas (JSON Schema) and the small validator that enforces them.

The same dicts validate input and make /openapi.json, so the document cannot drift from the
checks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from jobs import limits

Schema = dict[str, Any]

BACKOFF: Schema = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": ["exponential", "fixed"]},
        "delay": {"type": "number", "minimum": 0, "maximum": limits.MAX_BACKOFF_DELAY},
    },
    "additionalProperties": False,
}

OPTIONS: Schema = {
    "type": "object",
    "properties": {
        "jobId": {
            "type": "string",
            "minLength": 1,
            "maxLength": limits.MAX_JOB_ID,
            "pattern": limits.JOB_ID_PATTERN,
            "not": {"enum": list(limits.JOB_ID_RESERVED)},
        },
        "delay": {"type": "number", "minimum": 0, "maximum": limits.MAX_DELAY},
        "attempts": {"type": "integer", "minimum": 1, "maximum": limits.MAX_ATTEMPTS},
        "backoff": BACKOFF,
        "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": limits.MAX_TIMEOUT},
        "priority": {"type": "integer", "minimum": -limits.PRIORITY, "maximum": limits.PRIORITY},
        "queue": {"type": "string", "minLength": 1, "maxLength": limits.MAX_POOL_NAME},
        "group": {
            "type": "string",
            "minLength": 1,
            "maxLength": limits.MAX_GROUP,
            "description": "a tenant, an API key...: the pool serves groups in turn, each under "
            "the limits' groups part",
        },
        "dedupe": {
            "type": "object",
            "description": "simple: no new job while the key's job waits or runs (at most "
            "ttl); throttle: one per ttl; debounce: the waiting job takes the newest data and "
            "starts ttl after the last enqueue",
            "required": ["key", "ttl"],
            "properties": {
                "key": {"type": "string", "minLength": 1, "maxLength": limits.MAX_DEDUPE_KEY},
                "ttl": {"type": "number", "exclusiveMinimum": 0, "maximum": limits.MAX_DELAY},
                "mode": {"type": "string", "enum": ["simple", "throttle", "debounce"]},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}

ENQUEUE: Schema = {
    "type": "object",
    "required": ["jobName"],
    "properties": {
        "jobName": {"type": "string", "minLength": 1, "maxLength": limits.MAX_NAME},
        "data": {"type": "object"},
        "options": OPTIONS,
    },
    "additionalProperties": False,
}

STATUSES = ["queued", "delayed", "active", "completed", "failed", "dead", "cancelled"]
MAX_BULK = 1000  # jobs in one POST /enqueue-tasks
# each job is checked against ENQUEUE on its own (a bad one answers its own error in the
# results), so the envelope asks only for objects
BULK: Schema = {
    "type": "object",
    "required": ["jobs"],
    "properties": {
        "jobs": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_BULK,
            "items": {"description": "a body of POST /enqueue-task"},
        }
    },
    "additionalProperties": False,
}
BULK_RESULTS: Schema = {
    "type": "object",
    "required": ["results"],
    "properties": {
        "results": {
            "type": "array",
            "description": "one per job, in order: the body /enqueue-task answers (the job's "
            "status as jobStatus) or an error body, each with its HTTP status as status",
            "items": {
                "type": "object",
                "required": ["status"],
                "properties": {
                    "status": {"type": "integer"},
                    "jobId": {"type": "string"},
                    "jobStatus": {"type": "string", "enum": STATUSES},
                    "error": {"type": "string"},
                    "detail": {"type": "string"},
                },
            },
        }
    },
}

MAX_LIMIT = 1_000_000  # the largest count a limit may name
RATE: Schema = {
    "type": "object",
    "required": ["max", "period"],
    "properties": {
        "max": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
        "period": {"type": "number", "exclusiveMinimum": 0, "maximum": 86_400},
    },
    "additionalProperties": False,
}
CONCURRENCY: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}
LIMITS: Schema = {
    "type": "object",
    "description": "every part optional: jobs started per period, tries running at once, and "
    "tries of one job name running at once, across every node",
    "properties": {
        "rate": RATE,
        "concurrency": CONCURRENCY,
        "groups": {
            "type": "object",
            "description": "for each value of options.group on its own",
            "properties": {"rate": RATE, "concurrency": CONCURRENCY},
            "additionalProperties": False,
        },
        "jobs": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["concurrency"],
                "properties": {"concurrency": CONCURRENCY},
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}
FLOW: Schema = {
    "type": "object",
    "properties": {
        "pool": {"type": "string"},
        "paused": {"type": "boolean"},
        "limits": {"type": ["object", "null"]},
        "caps": {"type": "object"},
        "heldUntil": {"type": ["string", "null"], "format": "date-time"},
        "running": {"type": "integer"},
        "startedInPeriod": {"type": "integer"},
    },
}

# a scheduler's job: the options of an enqueue but its id and delay (a due time sets both)
SCHEDULED_OPTIONS: Schema = {
    **OPTIONS,
    "properties": {
        k: v
        for k, v in OPTIONS["properties"].items()
        if k not in ("jobId", "delay", "dedupe", "group")
    },
}
MAX_CRON = 200  # characters of a cron expression
SCHEDULER: Schema = {
    "type": "object",
    "description": "a job and when it runs: every (seconds) or cron (with tz), not both",
    "required": ["jobName"],
    "properties": {
        "jobName": ENQUEUE["properties"]["jobName"],
        "data": {"type": "object"},
        "options": SCHEDULED_OPTIONS,
        "every": {"type": "number", "minimum": 1, "maximum": 366 * 86_400},
        "cron": {"type": "string", "minLength": 1, "maxLength": MAX_CRON},
        "tz": {"type": "string", "minLength": 1, "maxLength": 64},
        "start": {"type": "string", "format": "date-time", "maxLength": 64},
        "end": {"type": "string", "format": "date-time", "maxLength": 64},
        "missed": {"type": "string", "enum": ["skip", "once"]},
    },
    "additionalProperties": False,
}
SCHEDULER_BODY: Schema = {
    "type": "object",
    "properties": {
        **SCHEDULER["properties"],
        "id": {"type": "string"},
        "paused": {"type": "boolean"},
        "start": {"type": ["string", "null"], "format": "date-time"},
        "end": {"type": ["string", "null"], "format": "date-time"},
        "nextRuns": {"type": "array", "items": {"type": "string", "format": "date-time"}},
    },
}

SEED_MESSAGE: Schema = {
    "type": "object",
    "required": ["message"],
    "properties": {"message": {"type": "string"}, "shouldFail": {"type": "boolean"}},
}

SEED_API_JOB: Schema = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"type": "string", "minLength": 1}, "payload": {"type": "object"}},
}

SEED_WORKER: Schema = {"type": "object"}

MAX_QUERY = 200  # characters of a listing's text search
MAX_LIST = 200  # jobs on one page of GET /jobs
MAX_HISTORY_MINUTES = 1440  # the longest span of GET /queue/history
DLQ_FILTER: Schema = {
    "type": "object",
    "properties": {
        "pool": {"type": "string", "maxLength": limits.MAX_POOL_NAME},
        "name": {"type": "string", "maxLength": limits.MAX_NAME},
        "q": {"type": "string", "maxLength": MAX_QUERY},
    },
    "additionalProperties": False,
}


JOB_RECORD: Schema = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "jobName": {"type": "string"},
        "status": {"type": "string", "enum": STATUSES},
        "data": {},
        "result": {},
        "error": {"type": ["string", "null"]},
        "attempts": {"type": "integer"},
        "assignedWorker": {"type": ["string", "null"]},
        "pool": {"type": "string"},
        "group": {"type": ["string", "null"]},
        "waitingFor": {"type": ["string", "null"]},
        "progress": {},
        "createdAt": {"type": ["string", "null"], "format": "date-time"},
        "startedAt": {"type": ["string", "null"], "format": "date-time"},
        "completedAt": {"type": ["string", "null"], "format": "date-time"},
    },
}

ENQUEUED: Schema = {
    "type": "object",
    "properties": {
        "message": {"type": "string"},
        "jobId": {"type": "string"},
        "jobName": {"type": "string"},
        "jobData": {},
        "assignedWorker": {"type": ["string", "null"]},
        # a new job is queued or delayed; a duplicate answers the existing job's status
        "status": {"type": "string", "enum": STATUSES},
        "duplicate": {"type": "boolean"},
        "deduplicated": {"type": "boolean", "description": "the job of options.dedupe.key"},
    },
}

ERROR: Schema = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
}

MAX_DEPTH = 32

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "null": (type(None),),
    "number": (int, float),
    "integer": (int,),
}

Check = Callable[[Any, str], None]


class Invalid(ValueError):
    """Input that does not match its schema; `field` names where."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field
        self.detail = detail


def _is(value: Any, kind: str) -> bool:
    if kind in ("number", "integer") and isinstance(value, bool):
        return False
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[kind])


def _depth(value: Any, limit: int = MAX_DEPTH) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        if depth > limit:
            return depth
        nxt: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                nxt.extend(item.values())
            elif isinstance(item, list):
                nxt.extend(item)
        level = nxt
    return depth


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def compile_schema(schema: Schema) -> Check:
    """Turn a schema (the JSON Schema subset used here) into one function that checks it.

    The checks run on every request, so the schema is read once, here, not per request.
    """
    checks: list[Check] = []
    kinds = schema.get("type")
    if kinds is not None:
        options = kinds if isinstance(kinds, list) else [kinds]
        words = " or ".join(options)
        plain = not {"number", "integer"} & set(options)  # no bool or float to tell apart
        types = tuple(t for k in options for t in _TYPES[k])

        def check_type(value: Any, where: str) -> None:
            if not (isinstance(value, types) if plain else any(_is(value, k) for k in options)):
                raise Invalid(where, f"{where} must be of type {words}")

        checks.append(check_type)
    if "enum" in schema:
        allowed = schema["enum"]
        listing = ", ".join(map(str, allowed))

        def check_enum(value: Any, where: str) -> None:
            if value not in allowed:
                given = repr(value)[:60]
                raise Invalid(where, f"{where} {given} is not one of {listing}")

        checks.append(check_enum)
    if "not" in schema:
        refused = schema["not"]["enum"]  # the one use of "not" here: values refused

        def check_not(value: Any, where: str) -> None:
            if value in refused:
                raise Invalid(where, f"{where} may not be {value!r}")

        checks.append(check_not)
    if {"minLength", "maxLength", "pattern"} & schema.keys():
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        pattern = re.compile(schema["pattern"]) if "pattern" in schema else None

        def check_string(value: Any, where: str) -> None:
            if not isinstance(value, str):
                return
            if len(value) < low:
                raise Invalid(where, f"{where} must not be empty")
            if high is not None and len(value) > high:
                raise Invalid(where, f"{where} must be at most {high} characters")
            if pattern is not None and not pattern.search(value):
                raise Invalid(where, f"{where} has characters that are not allowed")

        checks.append(check_string)
    if {"minimum", "exclusiveMinimum", "maximum"} & schema.keys():
        minimum, above, maximum = (
            schema.get(k) for k in ("minimum", "exclusiveMinimum", "maximum")
        )

        def check_number(value: Any, where: str) -> None:
            if not _is(value, "number"):
                return
            if minimum is not None and value < minimum:
                raise Invalid(where, f"{where} must be at least {minimum}")
            if above is not None and value <= above:
                raise Invalid(where, f"{where} must be greater than {above}")
            if maximum is not None and value > maximum:
                raise Invalid(where, f"{where} must be at most {maximum}")

        checks.append(check_number)
    if {"minItems", "maxItems"} & schema.keys():
        fewest, most = schema.get("minItems", 0), schema.get("maxItems")

        def check_array(value: Any, where: str) -> None:
            if not isinstance(value, list):
                return
            if len(value) < fewest:
                raise Invalid(where, f"{where} must hold at least {fewest} items")
            if most is not None and len(value) > most:
                raise Invalid(where, f"{where} must hold at most {most} items")

        checks.append(check_array)
    if {"required", "properties", "additionalProperties"} & schema.keys():
        required = tuple(schema.get("required", ()))
        properties = {
            name: compile_schema(sub) for name, sub in schema.get("properties", {}).items()
        }
        others = schema.get("additionalProperties", True)
        closed = others is False
        other = compile_schema(others) if isinstance(others, dict) else None

        def check_object(value: Any, where: str) -> None:
            if not isinstance(value, dict):
                return
            path = "" if where == "body" else where
            for name in required:
                if name not in value:
                    field = _join(path, name)
                    raise Invalid(field, f"{field} is required")
            for name, item in value.items():
                check = properties.get(name, other)
                if check is not None:
                    check(item, _join(path, name))
                elif closed:
                    field = _join(path, name)
                    raise Invalid(field, f"{field} is not a known field")

        checks.append(check_object)

    if len(checks) == 1:
        return checks[0]

    def check_all(value: Any, where: str) -> None:
        for check in checks:
            check(value, where)

    return check_all


_compiled: dict[int, Check] = {}


def name_choices(jobs: list[str], pools: list[str]) -> None:
    """Name the registered jobs and configured pools in the schemas, so that both the checks
    and /openapi.json list them."""
    ENQUEUE["properties"]["jobName"]["enum"] = sorted(jobs)
    SEED_API_JOB["properties"]["type"]["enum"] = sorted(jobs)
    OPTIONS["properties"]["queue"]["enum"] = sorted(pools)
    _compiled.clear()


def validate(value: Any, schema: Schema, where: str = "body") -> None:
    """Raise Invalid at the first place where a request body (or the part of it named
    `where`) breaks `schema`."""
    check = _compiled.get(id(schema))
    if check is None:
        check = _compiled[id(schema)] = compile_schema(schema)
    check(value, where)
    if _depth(value) > MAX_DEPTH:
        raise Invalid("body", f"body is nested deeper than {MAX_DEPTH} levels")

"""Request schemas (JSON Schema) and the small validator that enforces them.

The same dicts validate input and make /openapi.json, so the document cannot drift from the
checks.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

BACKOFF: Schema = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": ["exponential", "fixed"]},
        "delay": {"type": "number", "minimum": 0, "maximum": 86400},
    },
    "additionalProperties": False,
}

OPTIONS: Schema = {
    "type": "object",
    "properties": {
        "jobId": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[^{}:\\s]+$"},
        "delay": {"type": "number", "minimum": 0, "maximum": 31536000},
        "attempts": {"type": "integer", "minimum": 1, "maximum": 1000},
        "backoff": BACKOFF,
        "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 86400},
        "priority": {"type": "integer", "minimum": -1000, "maximum": 1000},
        "queue": {"type": "string", "minLength": 1, "maxLength": 64},
    },
    "additionalProperties": False,
}

ENQUEUE: Schema = {
    "type": "object",
    "required": ["jobName"],
    "properties": {
        "jobName": {"type": "string", "minLength": 1, "maxLength": 128},
        "data": {"type": "object"},
        "options": OPTIONS,
    },
    "additionalProperties": False,
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

JOB_RECORD: Schema = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "jobName": {"type": "string"},
        "status": {
            "type": "string",
            "enum": ["queued", "delayed", "active", "completed", "failed", "dead", "cancelled"],
        },
        "data": {},
        "result": {},
        "error": {"type": ["string", "null"]},
        "attempts": {"type": "integer"},
        "assignedWorker": {"type": ["string", "null"]},
        "pool": {"type": "string"},
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
        "status": {"type": "string", "enum": ["queued", "delayed"]},
        "duplicate": {"type": "boolean"},
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


def validate(value: Any, schema: Schema, path: str = "") -> None:
    """Raise Invalid at the first place where `value` breaks `schema` (a JSON Schema subset)."""
    import re

    where = path or "body"
    kinds = schema.get("type")
    if kinds is not None:
        options = kinds if isinstance(kinds, list) else [kinds]
        if not any(_is(value, k) for k in options):
            raise Invalid(where, f"{where} must be of type {' or '.join(options)}")
    if "enum" in schema and value not in schema["enum"]:
        raise Invalid(where, f"{where} must be one of {', '.join(map(str, schema['enum']))}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            raise Invalid(where, f"{where} must not be empty")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise Invalid(where, f"{where} must be at most {schema['maxLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise Invalid(where, f"{where} has characters that are not allowed")
    if _is(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            raise Invalid(where, f"{where} must be at least {schema['minimum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            raise Invalid(where, f"{where} must be greater than {schema['exclusiveMinimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise Invalid(where, f"{where} must be at most {schema['maximum']}")
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                field = f"{path}.{name}" if path else name
                raise Invalid(field, f"{field} is required")
        properties = schema.get("properties", {})
        for name, item in value.items():
            field = f"{path}.{name}" if path else name
            if name in properties:
                validate(item, properties[name], field)
            elif schema.get("additionalProperties") is False:
                raise Invalid(field, f"{field} is not a known field")
    if not path and _depth(value) > MAX_DEPTH:
        raise Invalid(where, f"{where} is nested deeper than {MAX_DEPTH} levels")

"""JSON for the hot paths: orjson's speed with the standard library's answers.

`dumps` and `loads` give what `json.dumps(value, separators=(",", ":"), ensure_ascii=False,
allow_nan=False).encode()` and `json.loads(raw, **checks)` give, byte for byte and value for
value, and raise what they raise (but for the one difference below). Only the common case goes
through orjson; where orjson would differ, the standard library decides:
- orjson writes NaN and Infinity as null (the standard library refuses them), so an answer
  holding `null` is written again by the standard library;
- orjson reads an integer past 64 bits as a float (the standard library keeps it exact), so
  text with a run of 19 digits is read by the standard library;
- orjson writes small floats its own way (0.00001 and 1e-7 where the standard library writes
  1e-05 and 1e-07), so an answer holding what may be one is written by the standard library;
- whatever orjson refuses (a big integer, a non-string key, a lone surrogate, bad JSON) is
  handed to the standard library, which either does it or raises its own error;
- datetimes, dataclasses and subclasses of the JSON types go to the standard library, which
  refuses the first two and writes the last as their base type, as before.
One difference is kept on purpose: orjson writes a UUID as its string and an Enum as its value
(as kombu's JSON does for Celery), where the standard library refuses both; so a job's data or
result may hold them.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# the types the standard library does not write are sent to `default`, which orjson lacks
# here: a TypeError, and the standard library gives its own answer
STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
STRICT |= orjson.OPT_PASSTHROUGH_SUBCLASS
# where orjson's float may differ from repr's: a negative exponent (a digit before e-), or
# 0.0000; a string that merely holds these is written by the standard library too (the same
# bytes, only slower). The `in` tests first: a regex over every answer costs more than orjson.
NEGATIVE_EXPONENT = re.compile(rb"[0-9]e-")
LONG_NUMBER = re.compile(rb"[0-9]{19}")
LONG_NUMBER_TEXT = re.compile(r"[0-9]{19}")


def dumps(value: Any) -> bytes:
    """`value` as compact JSON in UTF-8; ValueError for NaN or Infinity, TypeError for what
    JSON cannot hold, UnicodeEncodeError for a lone surrogate (as the standard library)."""
    try:
        out = orjson.dumps(value, option=STRICT)
    except TypeError:
        pass
    else:
        if b"null" not in out and not _own_float(out):  # null may have been NaN or Infinity
            return out
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode()


def _own_float(out: bytes) -> bool:
    if b"0.0000" in out:
        return True
    return b"e-" in out and NEGATIVE_EXPONENT.search(out) is not None


def loads(raw: bytes | str, **checks: Any) -> Any:
    """JSON text as a value; `checks` are `json.loads` hooks (`parse_constant`, `parse_float`)
    for the cases orjson refuses: NaN, Infinity and numbers past a double's range."""
    long = LONG_NUMBER_TEXT if isinstance(raw, str) else LONG_NUMBER
    if long.search(raw) is None:  # type: ignore[arg-type]
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw, **checks)

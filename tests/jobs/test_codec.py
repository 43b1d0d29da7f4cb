"""jobs.codec answers as the standard library's json does, byte for byte, for any value and any
text."""

from __future__ import annotations

import datetime
import enum
import json
import math
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs import codec

# what the hot paths meet: JSON values, plus what JSON cannot hold (NaN, Infinity, integers
# past 64 bits, lone surrogates, keys that are not strings)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**64 + 2)
    | st.integers(min_value=-(2**64), max_value=-(2**63) + 2)
    | st.floats()
    | st.floats(min_value=1e-12, max_value=1e-3)
    | st.floats(min_value=1e15, max_value=1e17)
    | st.sampled_from([1e-05, 2.5e-05, 1e-07, 0.0001, -0.0, 5e-324, 1e16, 1.5e300])
    | st.text()
    | st.sampled_from(["\ud800", "a\udfffb", "\u2028", "\x00", "é", "😀"])
)
keys = st.text() | st.sampled_from(["\ud800"]) | st.integers(-3, 3) | st.booleans() | st.none()
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=30,
)


def stdlib_dumps(value: Any) -> bytes:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode()


def outcome(call: Any, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    try:
        return "value", call(*args, **kwargs)
    except Exception as exc:  # the exception's type is part of the answer
        return "error", type(exc)


def same(a: Any, b: Any) -> bool:
    """Equal as values, NaN included, and of the same types (1 is not 1.0, True is not 1)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@settings(max_examples=600)
@given(values)
def test_dumps_writes_what_the_standard_library_writes_or_fails_as_it_does(value: Any) -> None:
    ours, theirs = outcome(codec.dumps, value), outcome(stdlib_dumps, value)
    assert ours[0] == theirs[0], (ours, theirs)
    if ours[0] == "error":
        assert issubclass(ours[1], theirs[1]) or issubclass(theirs[1], ours[1])
    else:
        assert ours[1] == theirs[1]


texts = st.one_of(
    values.map(lambda v: json.dumps(v, ensure_ascii=True)),  # escapes, NaN and Infinity too
    values.map(lambda v: json.dumps(v, ensure_ascii=False)),
    st.text(alphabet='[]{}",:0123456789.eE+-truefalsnNIiy \\u', max_size=40),
    st.sampled_from(
        ["1e400", "-1e400", "[1e309]", "123456789012345678901", '"\\ud800"', "\ufeff1"]
    ),
)


@settings(max_examples=600)
@given(texts)
def test_loads_reads_what_the_standard_library_reads_or_fails_as_it_does(text: str) -> None:
    def refuse(name: str) -> Any:
        raise ValueError(name)

    checks = {"parse_constant": refuse}
    for raw in (text, text.encode("utf-8", "surrogatepass")):
        ours, theirs = outcome(codec.loads, raw, **checks), outcome(json.loads, raw, **checks)
        assert ours[0] == theirs[0], (raw, ours, theirs)
        if ours[0] == "value":
            assert same(ours[1], theirs[1]), (raw, ours, theirs)


@pytest.mark.parametrize(
    "value", [datetime.datetime(2026, 1, 1), datetime.date(2026, 1, 1), object(), {(1,): 1}]
)
def test_dumps_refuses_what_the_standard_library_refuses(value: Any) -> None:
    with pytest.raises(TypeError):
        codec.dumps(value)


def test_a_uuid_and_an_enum_are_written_as_their_string_and_value() -> None:
    """The one difference from the standard library, kept on purpose (jobs/codec.py)."""

    class Colour(enum.Enum):
        RED = "red"

    value = {"id": uuid.UUID(int=1), "colour": Colour.RED}
    assert codec.dumps(value) == b'{"id":"00000000-0000-0000-0000-000000000001","colour":"red"}'

"""``aetherctl``'s JSON output is strict JSON, whatever numbers a command prints."""

from __future__ import annotations

import io
import json
import math

from hypothesis import given
from hypothesis import strategies as st

from control_plane.cli.output import print_json


def _strict(text: str) -> object:
    def refuse(constant: str) -> object:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_floats_are_written_as_proto3_json_writes_them() -> None:
    out = io.StringIO()
    print_json({"runs": [{"loss": math.nan, "best": math.inf}, (-math.inf, 1.5)], "n": 2}, out)
    # json.dump wrote bare NaN/Infinity, which jq and most parsers refuse (`runs compare --json`).
    assert _strict(out.getvalue()) == {
        "runs": [{"loss": "NaN", "best": "Infinity"}, ["-Infinity", 1.5]],
        "n": 2,
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_any_value_prints_as_strict_json_keeping_finite_values(value: object) -> None:
    out = io.StringIO()
    print_json(value, out)
    parsed = _strict(out.getvalue())

    def expected(data: object) -> object:
        if isinstance(data, float) and not math.isfinite(data):
            return "NaN" if math.isnan(data) else ("Infinity" if data > 0 else "-Infinity")
        if isinstance(data, dict):
            return {k: expected(v) for k, v in data.items()}
        if isinstance(data, list):
            return [expected(v) for v in data]
        return data

    assert parsed == expected(value)

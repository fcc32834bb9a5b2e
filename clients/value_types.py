"""Mapping between the wire's ``aether.v1.ValueType`` and numpy dtype names (the names the packed-blob
codec in ``kernels`` uses). The one place both planes and the SDK translate types."""

from __future__ import annotations

from clients.aether.v1 import types_pb2

_TO_NUMPY: dict[int, str] = {
    types_pb2.FLOAT32: "float32",
    types_pb2.FLOAT64: "float64",
    types_pb2.INT32: "int32",
    types_pb2.INT64: "int64",
    types_pb2.BOOL: "bool",
}
_FROM_NAME: dict[str, int] = {
    **{name: value for value, name in _TO_NUMPY.items()},
    "string": types_pb2.STRING,
}

#: Lower-case names accepted in definitions and by the CLI.
TYPE_NAMES: tuple[str, ...] = tuple(_FROM_NAME)


def numpy_dtype_name(value_type: int) -> str:
    """numpy dtype name of a numeric feature type; ValueError for STRING or an unknown value."""
    try:
        return _TO_NUMPY[value_type]
    except KeyError:
        raise ValueError(f"value type {type_name(value_type)} has no packed numeric layout") from None


def type_name(value_type: int) -> str:
    """Lower-case name of a ValueType (``float32``, ``string``...)."""
    for name, value in _FROM_NAME.items():
        if value == value_type:
            return name
    return f"unknown({value_type})"


def value_type(name: str) -> int:
    """ValueType for a lower-case name; ValueError listing the accepted names otherwise."""
    try:
        return _FROM_NAME[name.lower()]
    except KeyError:
        raise ValueError(f"unknown type {name!r}; expected one of {', '.join(TYPE_NAMES)}") from None

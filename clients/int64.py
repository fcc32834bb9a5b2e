"""The range of the wire's and the databases' 64-bit signed integers (protobuf int64, BIGINT): one
definition for every check that keeps a value within it."""

from __future__ import annotations

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

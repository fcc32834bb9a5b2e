"""Comparisons of text that give the same answer on SQLite and PostgreSQL.

SQLite and PostgreSQL agree on ``=``, but not on the operators built for people: LIKE ignores the case of
ASCII letters on SQLite and not on PostgreSQL (and gives ``%`` and ``_``, frequent in names, a meaning of
their own), so a filter written with it lists different rows on each backend."""

from __future__ import annotations

from sqlalchemy import SQLColumnExpression, func
from sqlalchemy.sql.expression import ColumnElement


def starts_with(column: SQLColumnExpression[str], prefix: str) -> ColumnElement[bool]:
    """Whether ``column``'s text begins with ``prefix``, character for character: ``substr`` compared with
    ``=`` is exact on both backends (both count characters, not bytes), where ``startswith`` becomes
    LIKE. Every listing filtered by a caller's prefix goes through it, so all match alike."""
    return func.substr(column, 1, len(prefix)) == prefix

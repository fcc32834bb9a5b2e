"""Comparisons and orderings of text that give the same answer on SQLite and PostgreSQL.

SQLite and PostgreSQL agree on ``=``, but not on the operators built for people: LIKE ignores the case of
ASCII letters on SQLite and not on PostgreSQL (and gives ``%`` and ``_``, frequent in names, a meaning of
their own), so a filter written with it lists different rows on each backend. Likewise ``<`` and ORDER
BY: SQLite compares text by its bytes, PostgreSQL by the database's collation, which for a database
created with an ICU or ``en_US`` locale sorts ``_`` and ``-`` before digits and ignores case at first,
so the same listing came in another order on each backend."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, SQLColumnExpression, String, func
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeEngine


def starts_with(column: SQLColumnExpression[str], prefix: str) -> ColumnElement[bool]:
    """Whether ``column``'s text begins with ``prefix``, character for character: ``substr`` compared with
    ``=`` is exact on both backends (both count characters, not bytes), where ``startswith`` becomes
    LIKE. Every listing filtered by a caller's prefix goes through it, so all match alike."""
    return func.substr(column, 1, len(prefix)) == prefix


class _ByteOrder(FunctionElement[str]):
    """The expression :func:`byte_order` returns; compiled per dialect below."""

    type = String()
    name = "byte_order"
    inherit_cache = True


def byte_order(column: SQLColumnExpression[str]) -> ColumnElement[str]:
    """``column`` compared and ordered by its bytes (UTF-8: by code point) on both backends, whatever
    collation the PostgreSQL database was created with: ``column COLLATE "C"`` there, the column itself
    on SQLite (whose columns here all compare by bytes, BINARY). A listing by name orders with it, and a
    keyset page's "after the last name" compares with it too: compared in the database's collation, the
    next page skipped or repeated names the page before ordered otherwise. A column listed this way is
    declared :func:`byte_ordered_name`, so that on PostgreSQL its index serves the order and the keyset
    comparison."""
    return _ByteOrder(column)


def byte_ordered_name(length: int) -> TypeEngine[str]:
    """The type of a name column that listings order and page by :func:`byte_order`: ``VARCHAR(length)``,
    collated ``"C"`` on PostgreSQL. An index is built in its column's collation, and a name's unique index
    in the database's (an ICU or ``en_US`` one) cannot serve ``ORDER BY name COLLATE "C"`` nor ``name
    COLLATE "C" > :last``: every page read and sorted every row of the table. In the column's own collation
    the expression is the column's, and a page is an index scan cut at its LIMIT. (SQLite's columns compare
    by bytes already.)"""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


@compiles(_ByteOrder)
def _column_itself(element: _ByteOrder, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(_ByteOrder, "postgresql")
def _in_c_collation(element: _ByteOrder, compiler: SQLCompiler, **kw: Any) -> str:
    return f'{compiler.process(element.clauses, **kw)} COLLATE "C"'


class _ByteLength(FunctionElement[int]):
    """The expression :func:`byte_length` returns; compiled per dialect below."""

    type = Integer()
    name = "byte_length"
    inherit_cache = True


def byte_length(column: SQLColumnExpression[str]) -> ColumnElement[int]:
    """The UTF-8 bytes of ``column``'s text, what it takes in a message: ``length`` counts characters on
    both backends, so a text of 4-byte characters would count a quarter of its size."""
    return _ByteLength(column)


@compiles(_ByteLength)
def _blob_length(element: _ByteLength, compiler: SQLCompiler, **kw: Any) -> str:
    return f"length(CAST({compiler.process(element.clauses, **kw)} AS BLOB))"  # SQLite: a BLOB's bytes


@compiles(_ByteLength, "postgresql")
def _octet_length(element: _ByteLength, compiler: SQLCompiler, **kw: Any) -> str:
    return f"octet_length({compiler.process(element.clauses, **kw)})"

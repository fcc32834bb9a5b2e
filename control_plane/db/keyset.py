"""Keyset (seek) pagination for listings whose rows come and go while a client pages through them.

An offset page token breaks as soon as the listing changes between two page calls: a row inserted
ahead of the cursor (a run started during a sweep, listed newest first) pushes every row one place
down and the next page repeats one; a row that leaves a filtered listing pulls every row one place up
and the next page skips one. A keyset token instead carries the sort values of the last row returned
plus a unique tiebreaker, and the next page is the rows strictly after that key in the listing's order,
so every row present throughout is returned exactly once whatever is inserted or removed meanwhile (a
row whose own sort values change between two calls may of course move across the cursor).

Every listing hands out the tokens of :func:`encode`. A raw name as the token took any text as a cursor, so
a garbage token silently returned a short or empty page; a bare number (model versions and the audit log,
which page by one unique integer column, gave out its decimal value) named no model or filter, so one given
for another silently skipped items (:func:`position` reads those listings' tokens). Several listings sort
by several columns, some user-chosen and some missing (NULL) for some rows, so the token is a small JSON
document: which listing issued it, a scope (a digest of the query it belongs to) and the key values.
Missing values sort after every present value in either direction, as ``CompareRuns`` has always ordered
them; every value in the key is re-checked against its column's type when a token comes back, so a
malformed or foreign token is ``InvalidArgument`` naming the problem instead of a database error."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, false, or_
from sqlalchemy.sql.expression import ColumnElement

from clients.errors import InvalidArgument

KeyValue = int | float | str | None


@dataclass(frozen=True)
class KeyColumn:
    """One column of a listing's order. ``kind`` is the Python type of its values (``float`` accepts
    integers too); ``nullable`` columns order missing values after every present one."""

    expression: ColumnElement[Any]
    kind: type[int] | type[float] | type[str]
    descending: bool = False
    nullable: bool = False


def order_by(columns: Sequence[KeyColumn]) -> list[ColumnElement[Any]]:
    """The ORDER BY clauses of ``columns``; the last column must be unique across the listing."""
    clauses: list[ColumnElement[Any]] = []
    for column in columns:
        if column.nullable:
            clauses.append(case((column.expression.is_(None), 1), else_=0))
        clauses.append(column.expression.desc() if column.descending else column.expression.asc())
    return clauses


def after(columns: Sequence[KeyColumn], key: Sequence[KeyValue]) -> ColumnElement[bool]:
    """The rows strictly after ``key`` in the order of :func:`order_by` (lexicographic over the columns:
    equal on every earlier column and after on this one, for some column)."""
    branches: list[ColumnElement[bool]] = []
    equal: list[ColumnElement[bool]] = []
    for column, value in zip(columns, key, strict=True):
        expression = column.expression
        if value is None:  # missing sorts last: nothing is after it on this column
            equal.append(expression.is_(None))
            continue
        later = expression < value if column.descending else expression > value
        if column.nullable:
            later = or_(later, expression.is_(None))
        branches.append(and_(*equal, later))
        equal.append(expression == value)
    return or_(false(), *branches)


def scope_digest(*parts: object) -> str:
    """A short scope for :func:`encode` from the parts of a query (JSON-able), so that a token carries no
    copy of a long filter."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def encode(listing: str, scope: str, key: Sequence[KeyValue]) -> str:
    """The token for the page after the row whose sort values are ``key``."""
    payload = json.dumps({"listing": listing, "scope": scope, "after": list(key)}, allow_nan=False)
    return base64.urlsafe_b64encode(payload.encode()).decode()


def decode(
    token: str, listing: str, scope: str, columns: Sequence[KeyColumn], *, scope_name: str = "query"
) -> list[KeyValue] | None:
    """The key a token of ``listing`` carries (``None`` for no token: the first page). ``InvalidArgument``
    when the token is malformed, was issued by another listing, or belongs to another ``scope`` (the
    message then says the ``scope_name`` changed)."""
    if not token:
        return None
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidArgument(
            f"page_token {_shown(token)} is malformed: {len(token):,} characters, and the tokens this server "
            f"gives out are under {MAX_TOKEN_CHARS:,}"
        )
    try:
        payload = json.loads(base64.urlsafe_b64decode(token.encode()), parse_constant=_no_constant)
        issued_by, issued_for, key = payload["listing"], payload["scope"], payload["after"]
    # RecursionError: JSON nested a thousand deep (a few kilobytes of "[") exhausts the decoder's stack.
    except (binascii.Error, UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise InvalidArgument(
            f"page_token {_shown(token)} is malformed: not a token this server gave out"
        ) from exc
    if issued_by != listing:
        raise InvalidArgument(f"page_token was issued by {issued_by!r}, not by {listing}")
    if issued_for != scope:
        raise InvalidArgument(f"page_token belongs to a different {scope_name}")
    if not isinstance(key, list) or len(key) != len(columns):
        raise InvalidArgument(f"page_token {_shown(token)} is malformed: its key does not match this listing")
    return [_checked(value, column, token) for value, column in zip(key, columns, strict=True)]


#: Longer than any token :func:`encode` gives out (a key may hold a few run parameters of up to 6,000
#: characters, for CompareRuns): a longer one is refused before it is decoded.
MAX_TOKEN_CHARS = 1024 * 1024


def _shown(value: object) -> str:
    """``value`` for an error message, cut short: the message travels in gRPC's trailing metadata (16 KiB
    at most, or the call ends RESOURCE_EXHAUSTED instead), and a whole bad token tells the caller nothing."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:60]}… ({len(text):,} characters)"


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a sort value")


def _checked(value: object, column: KeyColumn, token: str) -> KeyValue:
    if value is None and column.nullable:
        return None
    if not isinstance(value, bool):  # JSON true/false parse as bool, a subclass of int
        if column.kind is str and isinstance(value, str):
            return value
        if column.kind is int and isinstance(value, int) and -(2**63) <= value < 2**63:
            return value
        if column.kind is float and isinstance(value, int | float):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if math.isfinite(number):
                return number
    raise InvalidArgument(
        f"page_token {_shown(token)} is malformed: {_shown(value)} is not a {column.kind.__name__} sort value"
    )


_DECIMAL = re.compile(r"[0-9]{1,19}")  # ASCII only: str.isdigit() takes '²', which int() refuses


def position(
    token: str, listing: str, scope: str, column: KeyColumn, maximum: int, *, scope_name: str
) -> int:
    """The position after which a page of ``listing`` starts (0 for no token: the first page), for a
    listing paged by one unique integer ``column`` (audit sequence numbers, model versions) whose
    positions run from 0 to ``maximum``. The token is one of :func:`encode`, so it names its listing and
    ``scope`` (which model, which filter) and :func:`decode` refuses it elsewhere. Releases before gave
    out the bare decimal position instead, which named no scope: one given for another model or filter
    silently skipped that listing's items up to its number. A bare number is refused, since whether it
    belongs here cannot be told, with a word to start again from the first page."""
    if _DECIMAL.fullmatch(token):
        raise InvalidArgument(
            f"page_token {_shown(token)} is a bare position, the token releases before this one gave out,"
            f" which does not say which {scope_name} it belongs to: start again from the first page"
            " (an empty page_token)"
        )
    key = decode(token, listing, scope, [column], scope_name=scope_name)
    if key is None:
        return 0
    after = key[0]
    if not isinstance(after, int) or not 0 <= after <= maximum:
        raise InvalidArgument(
            f"page_token {_shown(token)} is malformed: its position {after!r} is not from 0 to {maximum}"
        )
    return after

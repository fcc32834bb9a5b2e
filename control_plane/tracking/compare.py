"""``CompareRuns`` as SQL: the filter and sort keys become one query over the runs of an experiment, with
one outer join per distinct metric, parameter or tag they mention (metrics read the one-row-per-(run,
key) summary table, never the points). SQL's three-valued logic gives the documented semantics for
missing values: a comparison with a missing value is unknown and never matches.

Pages are keyset pages (:mod:`control_plane.db.keyset`): the token carries the last row's values of
every sort key (missing ones as null, which sorts last in either direction) and its run id, the unique
tiebreaker, and the next page starts strictly after that key; so runs started, or leaving the filter's
result set, while a client pages neither repeat nor skip a row (an offset would). Every sort key type
(numbers, strings, times) has a total order in SQL, so no sort needs an offset fallback. The token also
carries a digest of the query, so a token is refused with a different experiment, filter or sort."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Select, and_, case, false, func, not_, or_, select, true
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.expression import ColumnElement

from clients.aether.v1 import tracking_pb2 as pb
from clients.errors import InvalidArgument
from control_plane.db import keyset, pages
from control_plane.db.strings import byte_order
from control_plane.tracking.filters import (
    And,
    Compare,
    Expr,
    Field,
    Not,
    SortKey,
    parse_filter,
    parse_sort_key,
)
from control_plane.tracking.records import status_value
from control_plane.tracking.tables import MetricLatestRow, ParamRow, RunRow, TagRow

DEFAULT_PAGE_SIZE = 100
_Query = TypeVar("_Query", bound=Select[*tuple[Any, ...]])
MAX_PAGE_SIZE = 1000
#: The most distinct metrics, parameters and tags a filter and its sort keys may name together: each is
#: one outer join, and SQLite refuses a query joining more than 64 tables.
MAX_JOINED_FIELDS = 32
#: Sort keys one compare query may give (ties after them are broken by run id).
MAX_SORT_KEYS = 16
#: Metric and parameter columns one compare query may ask for together. Every row carries each parameter
#: cell whole (up to 6,000 characters): 256 of them stay within 1.6 MB, so one row always fits a reply.
MAX_COLUMNS = 256


@dataclass(frozen=True)
class CompareQuery:
    experiment_pk: int
    metrics: Sequence[Field] = ()
    params: Sequence[str] = ()
    filter: str = ""
    order_by: Sequence[str] = ()
    page_size: int = 0
    page_token: str = ""


@dataclass(frozen=True)
class CompareRowData:
    run_id: str
    name: str
    status: str
    start_time_us: int
    metrics: list[float | None]
    params: list[str | None]


@dataclass
class ComparePage:
    rows: list[CompareRowData] = field(default_factory=list)
    next_page_token: str = ""
    total_count: int = 0


class _Columns:
    """One outer join per distinct (kind, key); the SQL expression of each field."""

    def __init__(self) -> None:
        self.joins: list[tuple[object, ColumnElement[bool]]] = []
        self._aliases: dict[tuple[str, str], object] = {}

    def _alias(self, kind: str, key: str) -> object:
        found = self._aliases.get((kind, key))
        if found is None:
            if len(self._aliases) >= MAX_JOINED_FIELDS:
                raise InvalidArgument(
                    f"the filter and sort keys name more than {MAX_JOINED_FIELDS} distinct metrics,"
                    f" parameters and tags (at {kind} {key!r}); at most {MAX_JOINED_FIELDS}"
                )
            table = {"metric": MetricLatestRow, "param": ParamRow, "tag": TagRow}[kind]
            found = aliased(table, name=f"{kind}_{len(self._aliases)}")
            condition = and_(found.run_pk == RunRow.id, found.key == key)  # type: ignore[attr-defined]
            self.joins.append((found, condition))
            self._aliases[(kind, key)] = found
        return found

    def text(self, column: ColumnElement[str]) -> ColumnElement[str]:
        # Compare strings by code point everywhere: SQLite does by default, PostgreSQL needs the C collation.
        return byte_order(column)

    def of(self, target: Field) -> ColumnElement[Any]:
        if target.kind == "metric":
            alias = self._alias("metric", target.key)
            attribute = {"latest": "value", "min": "min_value", "max": "max_value"}[target.aggregate]
            column: ColumnElement[Any] = getattr(alias, attribute)
            return column
        if target.kind in ("param", "tag"):
            alias = self._alias(target.kind, target.key)
            value: ColumnElement[Any] = self.text(alias.value)  # type: ignore[attr-defined]
            return value
        if target.key == "name":
            return self.text(RunRow.name)  # type: ignore[arg-type]
        if target.key == "status":
            return RunRow.status  # type: ignore[return-value]
        if target.key == "start_time":
            return RunRow.start_time_us  # type: ignore[return-value]
        # A run that has not ended has no end time (stored as 0).
        return case((RunRow.end_time_us == 0, None), else_=RunRow.end_time_us)

    def condition(self, expression: Expr) -> ColumnElement[bool]:
        if isinstance(expression, Compare):
            column = self.of(expression.field)
            value = expression.value
            comparisons = {
                "=": lambda: column == value,
                "!=": lambda: column != value,
                "<": lambda: column < value,
                "<=": lambda: column <= value,
                ">": lambda: column > value,
                ">=": lambda: column >= value,
            }
            result: ColumnElement[bool] = comparisons[expression.op]()
            return result
        if isinstance(expression, Not):
            return not_(self.condition(expression.item))
        items = [self.condition(item) for item in expression.items]
        return and_(true(), *items) if isinstance(expression, And) else or_(false(), *items)

    def apply(self, query: _Query) -> _Query:
        for alias, condition in self.joins:
            query = query.outerjoin(alias, condition)  # type: ignore[arg-type]
        return query


def _digest(query: CompareQuery) -> str:
    payload = json.dumps([query.experiment_pk, query.filter, list(query.order_by)])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


_LISTING = "CompareRuns"


def _key_columns(columns: _Columns, sort_keys: Sequence[SortKey]) -> list[keyset.KeyColumn]:
    """The page order: each sort key, missing values last, then the run id."""
    key_columns = [
        keyset.KeyColumn(columns.of(key.field), _kind_of(key.field), descending=key.descending, nullable=True)
        for key in sort_keys
    ]
    key_columns.append(keyset.KeyColumn(RunRow.run_id, str))  # type: ignore[arg-type]
    return key_columns


def _kind_of(target: Field) -> type[int] | type[float] | type[str]:
    if target.kind == "metric":
        return float
    if target.kind == "attribute" and target.numeric:
        return int
    return str


def page_size_of(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument(f"page_size must not be negative, got {requested}")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _check_columns(query: CompareQuery) -> None:
    """A column asked for twice is refused, as ``aetherctl runs compare`` refuses it: a client keying cells
    by column name would see one of the two, and repeating a parameter column is the one way left to make
    a single row outgrow a reply (the page cut by bytes ends after one row)."""
    if len(query.metrics) + len(query.params) > MAX_COLUMNS:
        raise InvalidArgument(
            f"{len(query.metrics)} metric and {len(query.params)} parameter columns asked for; at most "
            f"{MAX_COLUMNS} together"
        )
    seen: set[Field] = set()
    for metric in query.metrics:
        if metric in seen:
            raise InvalidArgument(
                f"metric column {metric.key!r} ({metric.aggregate}) is asked for twice; name each column once"
            )
        seen.add(metric)
    if len(set(query.params)) != len(query.params):
        twice = next(key for index, key in enumerate(query.params) if key in query.params[:index])
        raise InvalidArgument(f"parameter column {twice!r} is asked for twice; name each column once")


def compare_runs(session: Session, query: CompareQuery) -> ComparePage:
    """One page of runs matching ``query.filter``, sorted by ``query.order_by`` (missing values last, ties
    by run id), with the requested metric and parameter columns."""
    expression = parse_filter(query.filter)
    if len(query.order_by) > MAX_SORT_KEYS:
        # Each key widens every later page's keyset condition by one more term per key (quadratic): 1,100
        # keys failed INTERNAL in SQLite, and a few hundred took the next page minutes of server CPU.
        raise InvalidArgument(
            f"order_by has {len(query.order_by)} sort keys; at most {MAX_SORT_KEYS} are allowed"
        )
    _check_columns(query)
    sort_keys: list[SortKey] = [parse_sort_key(text) for text in query.order_by]
    size = page_size_of(query.page_size)

    columns = _Columns()
    conditions: list[ColumnElement[bool]] = [RunRow.experiment_pk == query.experiment_pk]
    if expression is not None:
        conditions.append(columns.condition(expression))
    key_columns = _key_columns(columns, sort_keys)
    last = keyset.decode(
        query.page_token, _LISTING, _digest(query), key_columns,
        scope_name="query (experiment, filter or sort changed)",
    )  # fmt: skip

    matching = columns.apply(select(RunRow.id).select_from(RunRow)).where(*conditions)
    total = int(session.execute(select(func.count()).select_from(matching.subquery())).scalar_one())
    sort_values = [column.expression.label(f"sort_{index}") for index, column in enumerate(key_columns)]
    page_query = (
        columns.apply(
            select(
                RunRow.id, RunRow.run_id, RunRow.name, RunRow.status, RunRow.start_time_us, *sort_values
            ).select_from(RunRow)
        )
        .where(*conditions)
        .order_by(*keyset.order_by(key_columns))
        .limit(size + 1)
    )
    if last is not None:
        page_query = page_query.where(keyset.after(key_columns, last))
    found = session.execute(page_query).all()
    runs = found[:size]
    page = ComparePage(total_count=total)
    if not runs:
        return page
    run_pks = [run.id for run in runs]
    metric_values = _metric_cells(session, run_pks, query.metrics)
    param_values = _param_cells(session, run_pks, query.params)
    # Cut by bytes as well as by count: a row carries each asked parameter whole (up to 6,000 characters),
    # and 100 rows of eight such parameters took 4.8 MB, past gRPC's 4 MiB receive limit, so the compare
    # failed RESOURCE_EXHAUSTED on the client for good. The first row always fits (a run's values do).
    budget = pages.PageBudget()
    for run in runs:
        row = CompareRowData(
            run_id=run.run_id,
            name=run.name,
            status=run.status,
            start_time_us=run.start_time_us,
            metrics=[metric_values.get((run.id, column.key, column.aggregate)) for column in query.metrics],
            params=[param_values.get((run.id, key)) for key in query.params],
        )
        if not budget.admits(row_message(row)):
            break
        page.rows.append(row)
    if len(found) > len(page.rows):
        end = runs[len(page.rows) - 1]._mapping
        page.next_page_token = keyset.encode(
            _LISTING, _digest(query), [end[f"sort_{index}"] for index in range(len(key_columns))]
        )
    return page


def row_message(row: CompareRowData) -> pb.CompareRow:
    """``row`` as the ``CompareRow`` it is sent as (a missing metric or parameter is an empty cell)."""
    return pb.CompareRow(
        run_id=row.run_id,
        name=row.name,
        status=status_value(row.status),
        start_time_us=row.start_time_us,
        metrics=[pb.MetricCell() if value is None else pb.MetricCell(value=value) for value in row.metrics],
        params=[pb.ParamCell() if value is None else pb.ParamCell(value=value) for value in row.params],
    )


def _metric_cells(
    session: Session, run_pks: list[int], metrics: Sequence[Field]
) -> dict[tuple[int, str, str], float]:
    keys = sorted({column.key for column in metrics})
    if not keys:
        return {}
    rows = session.execute(
        select(
            MetricLatestRow.run_pk,
            MetricLatestRow.key,
            MetricLatestRow.value,
            MetricLatestRow.min_value,
            MetricLatestRow.max_value,
        ).where(MetricLatestRow.run_pk.in_(run_pks), MetricLatestRow.key.in_(keys))
    )
    cells: dict[tuple[int, str, str], float] = {}
    for row in rows:
        cells[(row.run_pk, row.key, "latest")] = row.value
        cells[(row.run_pk, row.key, "min")] = row.min_value
        cells[(row.run_pk, row.key, "max")] = row.max_value
    return cells


def _param_cells(session: Session, run_pks: list[int], keys: Sequence[str]) -> dict[tuple[int, str], str]:
    if not keys:
        return {}
    rows = session.execute(
        select(ParamRow.run_pk, ParamRow.key, ParamRow.value).where(
            ParamRow.run_pk.in_(run_pks), ParamRow.key.in_(sorted(set(keys)))
        )
    )
    return {(row.run_pk, row.key): row.value for row in rows}

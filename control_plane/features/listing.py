"""The pages of the registry's List RPCs (ListEntities, ListFeatureViews, ListFeatureViewVersions).

Entity and view descriptions, tags and feature descriptions have no size bound, and these listings
were not paged: a registry whose views took more than gRPC's 4 MiB together could not be listed at all
(RESOURCE_EXHAUSTED, for good). A page now ends at ``page_size`` items (0: no count bound, as the
listings had none, so a client that predates paging still gets everything that fits one page) or where
its items fill :data:`pages.MAX_PAGE_BYTES`, always after one. Tokens are keyset tokens
(:mod:`control_plane.db.keyset`) on the name (on the version number for a view's versions), so an item
added or removed while a client pages shifts nothing. Rows are read a chunk at a time, and no further
than the page reaches: a page of two views of large descriptions need not read every view of the
registry. The WatchRegistry snapshot is another path, unbounded on purpose (the data plane's channel
takes large messages)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ColumnElement

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.errors import InvalidArgument
from control_plane.db import keyset, pages
from control_plane.db.models import EntityRow, FeatureViewRow, FeatureViewVersionRow
from control_plane.db.strings import byte_order
from control_plane.features import store

R = TypeVar("R")
Key = list[keyset.KeyValue]

MAX_PAGE_SIZE = 1000
#: The most bytes one version of a view may take as a message (``FeatureRegistry`` refuses writes past it):
#: a page holds at least one item, so a larger one could never be listed, nor any view after it.
MAX_VIEW_MESSAGE_BYTES = pages.MAX_PAGE_BYTES
#: Rows read from the database at once while a page is filled: a description may be megabytes.
_CHUNK = 32
# Entities and views are listed by name, versions by number: each unique in its listing.
# Names in byte order on both backends (:func:`byte_order`), the order SQLite has always listed them in.
_ENTITY_ORDER = (keyset.KeyColumn(byte_order(EntityRow.name), str),)
_VIEW_ORDER = (keyset.KeyColumn(byte_order(FeatureViewRow.name), str),)
_VERSION_ORDER = (keyset.KeyColumn(FeatureViewVersionRow.version, int),)  # type: ignore[arg-type]


def entities_page(session: Session, page_size: int, page_token: str) -> tuple[list[pb.Entity], str]:
    """A page of entities by name and the token of the next one ("" after the last)."""
    _check_page_size(page_size)
    last = keyset.decode(page_token, "ListEntities", "", _ENTITY_ORDER, scope_name="listing")
    rows = _chunks(session, EntityRow, _ENTITY_ORDER, lambda row: [row.name], last)
    entities, more = pages.cut((store.entity_message(row) for row in rows), page_size)
    return entities, keyset.encode("ListEntities", "", [entities[-1].name]) if more else ""


def views_page(
    session: Session,
    owner: str,
    tags: Mapping[str, str],
    include_retired: bool,
    page_size: int,
    page_token: str,
) -> tuple[list[pb.FeatureView], str]:
    """A page of :func:`matching_views` and the token of the next one ("" after the last); a token given
    for another filter is refused (its cursor would skip or repeat views of this one)."""
    _check_page_size(page_size)
    scope = keyset.scope_digest(owner, sorted(tags.items()), include_retired)
    last = keyset.decode(page_token, "ListFeatureViews", scope, _VIEW_ORDER, scope_name="filter")
    views, more = pages.cut(matching_views(session, owner, tags, include_retired, last), page_size)
    return views, keyset.encode("ListFeatureViews", scope, [views[-1].spec.name]) if more else ""


def matching_views(
    session: Session, owner: str, tags: Mapping[str, str], include_retired: bool, after: Key | None = None
) -> Iterator[pb.FeatureView]:
    """By name (those after ``after``), the latest servable version of every view owned by ``owner``
    (any when empty) carrying every tag in ``tags``; a view whose versions are all retired appears (with
    its last version) only with ``include_retired``."""
    for view in _chunks(session, FeatureViewRow, _VIEW_ORDER, lambda row: [row.name], after):
        if owner and view.owner != owner:
            continue
        if any(view.tags.get(key) != value for key, value in tags.items()):
            continue
        versions = store.versions_of(session, view)
        shown = store.latest_servable(versions) or (versions[-1] if include_retired else None)
        if shown is not None:
            yield store.view_message(view, shown)


def versions_page(
    session: Session, name: str, page_size: int, page_token: str
) -> tuple[list[pb.FeatureView], str]:
    """A page of every version of view ``name`` (retired ones included), oldest first, and the token of
    the next one ("" after the last). ``NotFound`` for an unknown view."""
    _check_page_size(page_size)
    last = keyset.decode(page_token, "ListFeatureViewVersions", name, _VERSION_ORDER, scope_name="view")
    view = store.require_view(session, name)
    of_view = FeatureViewVersionRow.view_id == view.id
    rows = _chunks(session, FeatureViewVersionRow, _VERSION_ORDER, lambda row: [row.version], last, of_view)
    versions, more = pages.cut((store.view_message(view, row) for row in rows), page_size)
    return versions, keyset.encode("ListFeatureViewVersions", name, [versions[-1].version]) if more else ""


def _check_page_size(page_size: int) -> None:
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be 0 (no bound) to {MAX_PAGE_SIZE}, got {page_size}")


def _chunks(
    session: Session,
    table: type[R],
    order: tuple[keyset.KeyColumn, ...],
    key_of: Callable[[R], Key],
    after: Key | None,
    *where: ColumnElement[bool],
) -> Iterator[R]:
    """The rows of ``table`` (those matching ``where``) in ``order`` after the key ``after``, read a chunk
    at a time and no further than the caller reads. Each chunk is a query of its own, so no cursor stays
    open while the caller reads more (a view's versions) on the same session."""
    query = select(table).where(*where).order_by(*keyset.order_by(order)).limit(_CHUNK)
    while True:
        chunk = query if after is None else query.where(keyset.after(order, after))
        rows: list[R] = list(session.scalars(chunk))
        yield from rows
        if len(rows) < _CHUNK:
            return
        after = key_of(rows[-1])

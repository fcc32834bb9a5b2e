"""Queries by object and time range, page by page, against a brute-force filter of every entry."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from clients.errors import InvalidArgument
from control_plane.audit.chain import AuditEntry
from control_plane.audit.log import record
from control_plane.audit.query import AuditFilter, iter_entries, query_page
from control_plane.db.engine import read_session, write_session
from tests.unit.audit.helpers import append, execute

OBJECTS = [("feature_view", "churn"), ("feature_view", "fraud"), ("model_version", "churn/1")]


def _matches(entry: AuditEntry, where: AuditFilter) -> bool:
    return (
        (where.object_type is None or entry.object_type == where.object_type)
        and (where.object_id is None or _under(entry.object_id, where.object_id))
        and (where.since_us is None or entry.timestamp_us >= where.since_us)
        and (where.until_us is None or entry.timestamp_us < where.until_us)
    )


def _under(stored: str, wanted: str) -> bool:
    """The id itself or one under it (a view's ``name:v1``, a model's ``name/1``)."""
    return stored == wanted or stored.startswith((wanted + ":", wanted + "/"))


def _all_pages(sessions: sessionmaker[Session], where: AuditFilter, page_size: int) -> list[AuditEntry]:
    found: list[AuditEntry] = []
    after = 0
    while True:
        with read_session(sessions) as session:
            page = query_page(session, where, after, page_size)
        assert len(page.entries) <= page_size
        found.extend(page.entries)
        if page.next_after_seq is None:
            return found
        after = page.next_after_seq


@pytest.fixture
def logged(engine: Engine, sessions: sessionmaker[Session]) -> list[AuditEntry]:
    """12 entries over three objects, with timestamps rewritten to 1000, 2000, ... (and rehashed state
    is irrelevant here: queries do not verify)."""
    entries = []
    for index in range(12):
        object_type, object_id = OBJECTS[index % 3]
        entries.append(append(sessions, index, object_type=object_type, object_id=object_id))
    execute(engine, "UPDATE audit_log SET timestamp_us = seq * 1000")
    return [
        AuditEntry(**{**entry.__dict__, "timestamp_us": entry.seq * 1000})  # what is stored now
        for entry in entries
    ]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    obj=st.sampled_from([None, ("feature_view", None), ("model_version", "churn"), *OBJECTS]),
    since=st.one_of(st.none(), st.integers(0, 13_000)),
    until=st.one_of(st.none(), st.integers(0, 13_000)),
    page_size=st.integers(1, 13),
)
def test_pages_concatenate_to_the_brute_force_selection(
    sessions: sessionmaker[Session],
    logged: list[AuditEntry],
    obj: tuple[str, str | None] | None,
    since: int | None,
    until: int | None,
    page_size: int,
) -> None:
    if since is not None and until is not None and until < since:
        since, until = until, since
    object_type, object_id = obj or (None, None)
    where = AuditFilter(object_type, object_id, since_us=since, until_us=until)
    expected = [entry for entry in logged if _matches(entry, where)]
    assert _all_pages(sessions, where, page_size) == expected
    assert list(iter_entries(sessions, where, batch_size=page_size)) == expected


def test_bad_queries_are_invalid_arguments(sessions: sessionmaker[Session]) -> None:
    # Each names the field of QueryAuditRequest/ExportAuditRequest to fix, as other refusals do.
    with pytest.raises(
        InvalidArgument, match=r"^filter\.object_type: .*object id 'churn' needs the object type"
    ):
        AuditFilter(object_id="churn")
    with pytest.raises(
        InvalidArgument, match=r"^filter\.until_us: .*ends \(5\) before it starts \(10, filter\.since_us\)"
    ):
        AuditFilter(since_us=10, until_us=5)
    for limit in (5000, -1):  # -1 was taken as the default page size
        with (
            read_session(sessions) as session,
            pytest.raises(InvalidArgument, match=r"^page_size: expected 0"),
        ):
            query_page(session, AuditFilter(), limit=limit)


def test_entries_are_filtered_by_outcome(sessions: sessionmaker[Session]) -> None:
    append(sessions, 0)
    with write_session(sessions) as session:
        record(
            session,
            actor="bob",
            action="delete",
            object_type="model_version",
            object_id="eta/1",
            before=None,
            after=None,
            outcome="refused: FAILED_PRECONDITION: still used by deployment 'eta-prod'",
        )
    append(sessions, 2)

    def seqs(refused: bool | None) -> list[int]:
        return [entry.seq for entry in iter_entries(sessions, AuditFilter(refused=refused))]

    assert (seqs(None), seqs(True), seqs(False)) == ([1, 2, 3], [2], [1, 3])
    with read_session(sessions) as session:
        [entry] = query_page(session, AuditFilter(object_type="model_version", refused=True)).entries
    assert entry.outcome == "refused: FAILED_PRECONDITION: still used by deployment 'eta-prod'"


def test_an_object_id_also_selects_the_ids_under_it_and_nothing_else(sessions: sessionmaker[Session]) -> None:
    """`audit list --object feature_view/zone_weather` missed the view's ingestion entries (object id
    ``zone_weather:v1``), and `--object model_version/demand` found nothing (ids are ``demand/1``)."""
    stored = [
        ("feature_view", "zone_weather"),
        ("feature_view", "zone_weather:v1"),
        ("feature_view", "zone_weather:v12"),
        ("feature_view", "zone_weather_x:v1"),  # another view whose name starts alike
        ("feature_view", "Zone_weather:v1"),  # LIKE ignores case on SQLite
        ("feature_view", "zone%weather:v1"),
        ("feature_view", "zone.weather:v1"),
        ("model_version", "demand/1"),
        ("model_version", "demand/12"),
        ("model_version", "demand1/1"),
        ("model_version", "de_and/1"),
        ("model_version", "de%/1"),
    ]
    for index, (object_type, object_id) in enumerate(stored):
        append(sessions, index, object_type=object_type, object_id=object_id)

    def found(object_type: str, object_id: str) -> list[str]:
        return [e.object_id for e in iter_entries(sessions, AuditFilter(object_type, object_id))]

    assert found("feature_view", "zone_weather") == ["zone_weather", "zone_weather:v1", "zone_weather:v12"]
    assert found("feature_view", "zone_weather:v1") == ["zone_weather:v1"]
    assert found("feature_view", "zone%weather") == ["zone%weather:v1"]
    assert found("feature_view", "zone_weathe") == []
    assert found("model_version", "demand") == ["demand/1", "demand/12"]
    assert found("model_version", "demand/1") == ["demand/1"]
    assert found("model_version", "de_and") == ["de_and/1"]  # "_" is not a wildcard
    assert found("model_version", "de%") == ["de%/1"]
    assert found("model_version", "de") == []

"""Stored drift reports: one row per scored window, read back newest first."""

from __future__ import annotations

import time
from collections.abc import Iterable

from google.protobuf import json_format
from sqlalchemy import Select, select
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as pb
from clients.errors import InvalidArgument
from control_plane.db import keyset, pages, read_session, write_session
from control_plane.monitoring.served import Version
from control_plane.monitoring.tables import DriftReportRow

# Enum names are stored without their prefix ("DRIFT", "PSI", "BENJAMINI_HOCHBERG"): shorter, and readable
# in SQL.
_STATUS = "DRIFT_STATUS_"
_TEST = "DRIFT_TEST_"
_CORRECTION = "MULTIPLE_TESTING_CORRECTION_"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: Newest first: by window end, ids breaking ties (and making the key unique).
_ORDER = (
    keyset.KeyColumn(DriftReportRow.window_end_us, int, descending=True),  # type: ignore[arg-type]
    keyset.KeyColumn(DriftReportRow.id, int, descending=True),  # type: ignore[arg-type]
)
#: Rows read from the database at a time: a page cut by size early reads little past it.
_CHUNK = 32


def store_report(sessions: sessionmaker[Session], report: pb.DriftReport) -> pb.DriftReport:
    """Stores ``report`` and returns it with its id and creation time."""
    stored = pb.DriftReport()
    stored.CopyFrom(report)
    stored.created_at_us = time.time_ns() // 1000
    with write_session(sessions) as session:
        row = DriftReportRow(
            deployment=stored.deployment,
            model_name=stored.model_name,
            version=stored.version,
            window_start_us=stored.window_start_us,
            window_end_us=stored.window_end_us,
            n_rows=stored.n_rows,
            status=_short(pb.DriftStatus.Name(stored.status), _STATUS),
            prediction_status=_short(pb.DriftStatus.Name(stored.prediction_status), _STATUS),
            test=_short(pb.DriftTest.Name(stored.test), _TEST),
            threshold=stored.threshold,
            correction=_short(pb.MultipleTestingCorrection.Name(stored.correction), _CORRECTION),
            drifted_share=stored.drifted_share,
            drift_share_threshold=stored.drift_share_threshold,
            # Protobuf JSON writes NaN as the string "NaN", which every JSON column accepts.
            features=[
                json_format.MessageToDict(f, preserving_proto_field_name=True) for f in stored.features
            ],
            outputs=[json_format.MessageToDict(f, preserving_proto_field_name=True) for f in stored.outputs],
            created_at_us=stored.created_at_us,
            late_rows=stored.late_rows,
            mismatched_rows=stored.mismatched_rows,
        )
        session.add(row)
        session.flush()
        stored.id = row.id
    return stored


def query_reports(
    sessions: sessionmaker[Session], deployment: str, since_us: int = 0, until_us: int = 0, limit: int = 0
) -> list[pb.DriftReport]:
    """Reports of ``deployment`` whose window ends in ``[since_us, until_us)`` (0 = unbounded), newest
    first, at most ``limit`` (0 = 100)."""
    query = _reports_query(deployment, since_us, until_us).limit(_limit(limit))
    with read_session(sessions) as session:
        return [_message(row) for row in session.execute(query).scalars()]


def reports_page(
    sessions: sessionmaker[Session],
    deployment: str,
    since_us: int = 0,
    until_us: int = 0,
    limit: int = 0,
    page_token: str = "",
) -> tuple[list[pb.DriftReport], str]:
    """One page of GetDriftReports: the reports :func:`query_reports` lists, at most ``limit`` of them and
    no more than fill :data:`pages.MAX_PAGE_BYTES` (always one), and the next page's token ("" on the
    last). A report holds every feature's statistics, so a hundred of a model with hundreds of features
    made a response over gRPC's 4 MiB, which no client could read. The token is the last report's
    (window end, id), so reports stored while a client pages neither repeat nor skip one."""
    query = _reports_query(deployment, since_us, until_us)
    size = _limit(limit)
    scope = keyset.scope_digest(deployment, since_us, until_us)
    last = keyset.decode(page_token, "GetDriftReports", scope, _ORDER, scope_name="deployment or window")
    if last is not None:
        query = query.where(keyset.after(_ORDER, last))
    query = query.limit(size + 1).execution_options(yield_per=_CHUNK)
    with read_session(sessions) as session:
        rows = session.execute(query).scalars()
        found, more = pages.cut((_message(row) for row in rows), size)
    if not more:
        return found, ""
    return found, keyset.encode("GetDriftReports", scope, [found[-1].window_end_us, found[-1].id])


def newest_of_versions(
    sessions: sessionmaker[Session], deployment: str, versions: Iterable[Version], stored_since_us: int = 0
) -> list[pb.DriftReport]:
    """The newest report (by window end, then id) stored at ``stored_since_us`` or later (its
    ``created_at_us``) of each of ``versions`` of ``deployment`` that has one, oldest first."""
    found = []
    with read_session(sessions) as session:
        for model, version in sorted(set(versions)):
            query = (
                select(DriftReportRow)
                .where(
                    DriftReportRow.deployment == deployment,
                    DriftReportRow.model_name == model,
                    DriftReportRow.version == version,
                    DriftReportRow.created_at_us >= stored_since_us,
                )
                .order_by(*keyset.order_by(_ORDER))
                .limit(1)
            )
            row = session.execute(query).scalar_one_or_none()
            if row is not None:
                found.append(_message(row))
    return sorted(found, key=lambda report: (report.window_end_us, report.id))


def newest_period_end(
    sessions: sessionmaker[Session], deployment: str, model_name: str, version: int, width_us: int
) -> int | None:
    """The end of the newest stored report of the version whose window is a time window ``width_us``
    long (aligned to the epoch, as time windows are): None when there is none. A count window's report
    may span as long by chance at any offset: such ones are passed over in the query, as a newer one
    would otherwise hide the aligned reports before it."""
    with read_session(sessions) as session:
        found = session.execute(
            select(DriftReportRow.window_end_us)
            .where(
                DriftReportRow.deployment == deployment,
                DriftReportRow.model_name == model_name,
                DriftReportRow.version == version,
                DriftReportRow.window_end_us - DriftReportRow.window_start_us == width_us,
                DriftReportRow.window_start_us % width_us == 0,
            )
            .order_by(DriftReportRow.window_end_us.desc())
            .limit(1)
        ).first()
    return None if found is None else int(found[0])


def _reports_query(deployment: str, since_us: int, until_us: int) -> Select[DriftReportRow]:
    if not deployment:
        raise InvalidArgument("a deployment name is required")
    query = select(DriftReportRow).where(DriftReportRow.deployment == deployment)
    if since_us:
        query = query.where(DriftReportRow.window_end_us >= since_us)
    if until_us:
        query = query.where(DriftReportRow.window_end_us < until_us)
    return query.order_by(*keyset.order_by(_ORDER))


def _limit(limit: int) -> int:
    if limit < 0 or limit > MAX_LIMIT:
        raise InvalidArgument(f"limit must lie in [0, {MAX_LIMIT}]")
    return limit or DEFAULT_LIMIT


def _message(row: DriftReportRow) -> pb.DriftReport:
    report = pb.DriftReport(
        id=row.id,
        deployment=row.deployment,
        model_name=row.model_name,
        version=row.version,
        window_start_us=row.window_start_us,
        window_end_us=row.window_end_us,
        n_rows=row.n_rows,
        status=_STATUS + row.status,
        prediction_status=_STATUS + row.prediction_status,
        test=_TEST + row.test,
        threshold=row.threshold,
        correction=_CORRECTION + row.correction,
        drifted_share=row.drifted_share,
        drift_share_threshold=row.drift_share_threshold,
        created_at_us=row.created_at_us,
        late_rows=row.late_rows,
        mismatched_rows=row.mismatched_rows,
    )
    for stored, target in ((row.features, report.features), (row.outputs, report.outputs)):
        for item in stored:
            target.append(json_format.ParseDict(item, pb.FeatureDrift()))
    return report


def _short(name: str, prefix: str) -> str:
    return name.removeprefix(prefix)

"""The pages of ListDecisions and ListEvaluations: newest first, cut by count (``limit``) and by encoded
size (:data:`pages.MAX_PAGE_BYTES`, always after one). Unpaged, a list of a hundred decisions or
evaluations with long reasons outgrew gRPC's 4 MiB receive limit and failed RESOURCE_EXHAUSTED for good.
Tokens are keyset tokens on the item's id (unique and growing), so items stored while a client pages
(the loop keeps deciding) land before the cursor and none repeats or is skipped."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import retraining_pb2 as pb
from control_plane.db import keyset, pages, read_session
from control_plane.retraining import evaluation_records, records
from control_plane.retraining.tables import RetrainingDecisionRow, RetrainingEvaluationRow

_DECISION_ORDER = (keyset.KeyColumn(RetrainingDecisionRow.id, int, descending=True),)  # type: ignore[arg-type]
_EVALUATION_ORDER = (keyset.KeyColumn(RetrainingEvaluationRow.id, int, descending=True),)  # type: ignore[arg-type]
#: Rows read from the database at a time: a page cut by size early reads little past it.
_CHUNK = 32


def decisions_page(
    sessions: sessionmaker[Session],
    deployment: str,
    triggered_only: bool = False,
    limit: int = 0,
    page_token: str = "",
) -> tuple[list[pb.TriggerDecision], str]:
    """One page of the decisions of ``deployment`` and the next page's token ("" on the last)."""
    query = records.decisions_query(deployment, triggered_only)
    size = records.page_limit(limit)
    scope = keyset.scope_digest(deployment, triggered_only)
    last = keyset.decode(
        page_token, "ListDecisions", scope, _DECISION_ORDER, scope_name="deployment or filter"
    )
    if last is not None:
        query = query.where(keyset.after(_DECISION_ORDER, last))
    query = query.limit(size + 1).execution_options(yield_per=_CHUNK)
    with read_session(sessions) as session:
        rows = session.execute(query).scalars()
        found, more = pages.cut((records.decision_message(row) for row in rows), size)
    return found, keyset.encode("ListDecisions", scope, [found[-1].id]) if more else ""


def evaluations_page(
    sessions: sessionmaker[Session], deployment: str, limit: int = 0, page_token: str = ""
) -> tuple[list[pb.Evaluation], str]:
    """One page of the evaluations of ``deployment`` and the next page's token ("" on the last)."""
    query = evaluation_records.evaluations_query(deployment)
    size = records.page_limit(limit)
    scope = keyset.scope_digest(deployment)
    last = keyset.decode(page_token, "ListEvaluations", scope, _EVALUATION_ORDER, scope_name="deployment")
    if last is not None:
        query = query.where(keyset.after(_EVALUATION_ORDER, last))
    query = query.limit(size + 1).execution_options(yield_per=_CHUNK)
    with read_session(sessions) as session:
        rows = session.execute(query)
        found, more = pages.cut((evaluation_records.evaluation_message(e, p) for e, p in rows), size)
    return found, keyset.encode("ListEvaluations", scope, [found[-1].id]) if more else ""

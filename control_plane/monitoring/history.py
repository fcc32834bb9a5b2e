"""Whether monitoring ever knew a deployment: a stored monitor config, a drift report or an indexed
prediction. The gRPC layer answers NOT_FOUND for a name that is neither a deployment nor known here, so a
misspelt name is refused while a deleted deployment's reports and quality windows stay readable. This
module reads only monitoring's own tables: the monitoring core does not depend on deployments."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db import read_session
from control_plane.monitoring.tables import DriftReportRow, MonitorConfigRow, PredictionIndexRow


def has_history(sessions: sessionmaker[Session], deployment: str) -> bool:
    with read_session(sessions) as session:
        if session.get(MonitorConfigRow, deployment) is not None:
            return True
        for column in (DriftReportRow.deployment, PredictionIndexRow.deployment):
            # Both tables are indexed by deployment first: one index probe each.
            if session.execute(select(column).where(column == deployment).limit(1)).first() is not None:
                return True
        return False

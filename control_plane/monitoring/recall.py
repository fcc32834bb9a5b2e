"""The stored drift reports the gauges start from after a (re)start of the control plane.

The gauges keep each served version's newest report in memory (:mod:`.gauges`); after a restart that was
empty, and the first served version to report decided a deployment's series alone: a 10 % canary's
NO_DRIFT set ``aether_drift_detected`` 0 while the primary's newest stored report had drifted. So, at the
first report of a deployment the gauges see after the start, the newest stored report of each other
version it serves is read back from the database (:mod:`.reports`), and the series are made of what is
stored. When what the plan serves is not known (no deployments lookup) nothing is read: every version
that ever reported would count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Set

from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.monitoring.gauges import MonitorGauges
from control_plane.monitoring.reports import newest_of_versions
from control_plane.monitoring.served import Version


async def recalled(
    gauges: MonitorGauges,
    sessions: sessionmaker[Session],
    report: pb.DriftReport,
    served: Set[Version] | None,
) -> list[pb.DriftReport]:
    """The newest stored reports of the versions besides ``report``'s that its deployment serves, when
    ``gauges`` see the deployment for the first time since the start; else none."""
    if served is None or gauges.knows(report.deployment):
        return []
    others = set(served) - {(report.model_name, report.version)}
    return await asyncio.to_thread(newest_of_versions, sessions, report.deployment, others)

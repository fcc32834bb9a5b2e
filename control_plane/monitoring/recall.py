"""The stored drift reports the gauges start from after a (re)start of the control plane.

The gauges keep each served version's newest report in memory (:mod:`.gauges`); after a restart that was
empty, and the first served version to report decided a deployment's series alone: a 10 % canary's
NO_DRIFT set ``aether_drift_detected`` 0 while the primary's newest stored report had drifted. So, at the
first report of a deployment the gauges see after the start, the newest stored report of each other
version it serves is read back from the database (:mod:`.reports`), and the series are made of what is
stored. When what the plan serves is not known (no deployments lookup) nothing is read: every version
that ever reported would count.

Only reports stored since the deployment's plan last changed (``Deployment.updated_at_us``, which every
change moves, traffic shares included) are read back: in memory, a version that stopped holding traffic
is forgotten and counts again only from its next report, so a canary's DRIFT from before it was parked
at 0 % must not come back after a restart once it holds traffic again. The gauges then do not depend on
whether the process restarted. A change that left the traffic as it was (a description) only reads back
less: those versions count again from their next report, as a version new to the plan does.

A failure of that read (the database down or locked) is no failure of the report: the report is already
stored and its window taken off the queue, so a raise there lost its gauges and its drift alert for good.
The read is logged and skipped instead (the report counts without the stored ones), and the deployment
is read back again at its next report.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Set

from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as pb
from clients.errors import NotFound
from control_plane.background import TRANSIENT_FAILURES
from control_plane.monitoring.gauges import MonitorGauges
from control_plane.monitoring.reports import newest_of_versions
from control_plane.monitoring.served import DeploymentLookup, Version


class Recall:
    """Reads back, once per deployment since the start, the stored reports its gauges count."""

    def __init__(
        self,
        gauges: MonitorGauges,
        sessions: sessionmaker[Session],
        deployments: DeploymentLookup | None,
        log: logging.Logger,
    ) -> None:
        self._gauges = gauges
        self._sessions = sessions
        self._deployments = deployments
        self._log = log
        self._failed: set[str] = set()  # deployments whose read failed: read at their next report

    async def reports(self, report: pb.DriftReport, served: Set[Version] | None) -> list[pb.DriftReport]:
        """The newest stored reports of the versions besides ``report``'s that its deployment serves,
        when ``gauges`` see the deployment for the first time since the start (or its last read
        failed); else none."""
        deployment = report.deployment
        lookup = self._deployments
        if served is None or lookup is None:
            return []
        if self._gauges.knows(deployment) and deployment not in self._failed:
            return []
        others = set(served) - {(report.model_name, report.version)}
        if not others:  # nothing to read back: spare the deployment's lookup
            self._failed.discard(deployment)
            return []
        try:
            found = await asyncio.to_thread(self._stored, lookup, deployment, others)
        except TRANSIENT_FAILURES as exc:
            self._failed.add(deployment)
            self._log.warning(
                "deployment %r: could not read back the stored drift reports of the versions it serves"
                " (retried at its next report); its gauges count drift report %d without them: %s",
                deployment,
                report.id,
                exc,
            )
            return []
        self._failed.discard(deployment)
        return found

    def _stored(
        self, lookup: DeploymentLookup, deployment: str, versions: Set[Version]
    ) -> list[pb.DriftReport]:
        """The newest reports of ``versions`` stored since ``deployment``'s plan last changed."""
        try:
            since_us = lookup(deployment).updated_at_us
        except NotFound:  # deleted since: it serves nothing
            return []
        return newest_of_versions(self._sessions, deployment, versions, since_us)

"""Prometheus gauges of the monitor, set from each stored report and quality window.

==================================================  ==============================================
``aether_drift_feature_score{deployment,feature}``  the configured test's statistic, from the report
                                                    that decides ``drifted`` (below)
``aether_drift_feature_drifted{deployment,feature}`` 1 when the feature drifted in a served version's
                                                    newest report, else 0
``aether_drift_feature_missing{deployment,feature}`` NaN/∞ values of the feature: the largest count among
                                                    the served versions' newest reports
``aether_drift_share{deployment}``                  the largest share of scored features that drifted
                                                    among the served versions' newest reports (absent
                                                    when none of them scored any)
``aether_drift_detected{deployment}``               1 when a served version's newest report drifted,
                                                    else 0 when one was scored, else -1 (insufficient
                                                    data / no reference / schema mismatch)
``aether_prediction_drift_detected{deployment}``    same, for the prediction output
``aether_model_performance{deployment,metric}``     the newest window with enough labels
``aether_feedback_orphaned``                        stored labels not joined to a prediction (yet)
``aether_feedback_orphans_expired``                 orphaned labels deleted by the index retention, ever
``aether_monitor_entries_total{outcome}``           log entries read (monitored, skipped, malformed),
                                                    each counted once however often it is re-read; and
                                                    ``trimmed``: removed by the data plane's cap on the
                                                    stream before the monitor read them
``aether_monitor_windows_total{outcome}``           closed windows reported, or dropped after their
                                                    report failed ``MAX_REPORT_ATTEMPTS`` times
``aether_monitor_rows_dropped_total``               logged rows no drift window holds: ``late`` for
``{deployment,reason}``                             their time window, or ``mismatched`` (another
                                                    feature count than the window's)
``aether_monitor_predictions_unscored_total``       logged prediction rows without the output the
``{deployment,model,version,output}``               monitor config names: indexed without a value, so
                                                    their labels join but are not scored
``aether_monitor_duplicate_request_ids_total``      logged prediction rows not indexed: another
``{deployment}``                                    prediction of the deployment was indexed under
                                                    their request id and row (it keeps the label);
                                                    at least once: counted again when re-read
                                                    after a restart (:mod:`.duplicate_ids`)
==================================================  ==============================================

The per-feature and per-metric gauges show the newest reports' features (one per served version, below)
and the newest window's metrics, and nothing else: a feature the newest report does not score (a
SCHEMA_MISMATCH or no-reference report scores none, nor a feature it lists as not compared) or a
metric undefined on the newest window (precision with no positive prediction, every metric when every
labelled prediction was NaN) has its series
removed, so it is absent from the scrape, as Prometheus has a value that is not known now (``absent()``
finds it; the old value went on reading as current, a feature "drifted" next to
``aether_drift_detected`` -1). A feature the report lists with too few values keeps its series, its
score NaN. ``aether_drift_share`` is removed the same way after a
report that scored no feature (each had too few values, a SCHEMA_MISMATCH, no reference profile): its
share is 0/0, and the 0 it read could not be told from "nothing drifted".

Reports come per model version, and the series per deployment: every series is made of the newest
report of each version the deployment serves (:func:`.served.gauged_versions`: the primary and canaries
holding traffic, the primary alone when none does; a primary at 0 % gets no new windows, and its last
DRIFT report held the series for good over the NO_DRIFT of the canary holding all the traffic):

* a feature's series goes only once none of them shows it (one version's report without a reference
  profile, a canary's, cleared the primary's drifted features). Among those listing it, ``drifted`` is
  1 when any drifted on it, else 0; ``missing`` the largest; ``score`` that of the newest of those whose
  ``drifted`` is the one shown (a drifted one when any is). Each report overwrote them, so under a 50/50
  plan where one version drifted on a feature ``drifted`` flipped 1/0 and ``== 1 for 10m`` never fired;
* ``aether_drift_detected`` is 1 when any of them drifted, else 0 when any was scored, else -1; the
  same for ``aether_prediction_drift_detected`` on the prediction status;
* ``aether_drift_share`` is the largest share among those that scored a feature, absent when none did.

So a canary without a reference profile reporting NO_REFERENCE between the primary's DRIFT reports no
longer flaps the share between the primary's and absent, nor "detected" between 1 and -1. Until a served
version has reported (the plan's versions all new, or the deployment deleted) the three per-deployment
series are absent: nothing is known of what it serves now.

A version the plan no longer has (a canary rolled back, the primary a promotion replaced) is forgotten
at the deployment's next report: its last report kept its features on the scrape for good. A report of
such a version, a window closed after the plan changed, sets none of the deployment's series (it is
stored, as history): its drift read as the deployment's, next to the NO_DRIFT of the version that
serves. When what the plan serves is not known (no deployments lookup) every version that reported
counts.

The newest reports are kept in memory, and a restart lost them: the first served version to report
then decided alone (a canary's NO_DRIFT set "detected" 0 over the primary's stored DRIFT). At the first
report of a deployment after the start, the newest stored report of each other version it serves is
read back (:mod:`.recall`), so the series are made of what is stored; with no deployments lookup,
nothing is read back.
"""

from __future__ import annotations

import weakref
from collections.abc import Collection, Iterable, Set
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.monitoring.served import Version

_STATUS_VALUE = {pb.DRIFT_STATUS_DRIFT: 1.0, pb.DRIFT_STATUS_NO_DRIFT: 0.0}


# Keyed by the registry itself, weakly: keyed by its id(), a registry freed and another made at the same
# address (tests make one per control plane) was handed the first one's gauges, registered on the freed
# registry, and the new registry showed none of them.
_SHARED: weakref.WeakKeyDictionary[CollectorRegistry, MonitorGauges] = weakref.WeakKeyDictionary()


def gauges_for(registry: CollectorRegistry | None = None) -> MonitorGauges:
    """The gauges on ``registry`` (default: the process-wide one), created once per registry, so that
    several control planes in one process (tests) share them instead of registering twice."""
    target = REGISTRY if registry is None else registry
    found = _SHARED.get(target)
    if found is None:
        found = _SHARED[target] = MonitorGauges(target)
    return found


class MonitorGauges:
    def __init__(self, registry: CollectorRegistry) -> None:
        # Per deployment, the newest report of each (model, version) it serves (see observe_report).
        self._newest: dict[str, dict[Version, _Newest]] = {}
        by_feature = ["deployment", "feature"]
        self.feature_score = Gauge(
            "aether_drift_feature_score",
            "Drift statistic of the configured test",
            by_feature,
            registry=registry,
        )
        self.feature_drifted = Gauge(
            "aether_drift_feature_drifted", "1 when the feature drifted", by_feature, registry=registry
        )
        self.feature_missing = Gauge(
            "aether_drift_feature_missing",
            "NaN or infinite values in the window",
            by_feature,
            registry=registry,
        )
        self.share = Gauge(
            "aether_drift_share", "Share of drifted features", ["deployment"], registry=registry
        )
        self.detected = Gauge(
            "aether_drift_detected", "1 drift, 0 none, -1 not scored", ["deployment"], registry=registry
        )
        self.prediction_detected = Gauge(
            "aether_prediction_drift_detected",
            "1 drift, 0 none, -1 not scored",
            ["deployment"],
            registry=registry,
        )
        self.performance = Gauge(
            "aether_model_performance",
            "Quality metric, newest window",
            ["deployment", "metric"],
            registry=registry,
        )
        self.orphaned = Gauge(
            "aether_feedback_orphaned", "Labels not joined to a prediction", registry=registry
        )
        # A gauge: the count lives in the database (it survives restarts), and is set from there.
        self.orphans_expired = Gauge(
            "aether_feedback_orphans_expired",
            "Orphaned labels deleted by retention: their prediction was never indexed",
            registry=registry,
        )
        self.entries = Counter(
            "aether_monitor_entries",
            "Prediction-log entries read, or trimmed from the log unread",
            ["outcome"],
            registry=registry,
        )
        self.windows = Counter(
            "aether_monitor_windows",
            "Closed drift windows, reported or dropped",
            ["outcome"],
            registry=registry,
        )

        self.rows_dropped = Counter(
            "aether_monitor_rows_dropped",
            "Logged rows left out of the drift windows: late, or another feature count",
            ["deployment", "reason"],
            registry=registry,
        )
        self.predictions_unscored = Counter(
            "aether_monitor_predictions_unscored",
            "Logged prediction rows without the output the monitor config names (not scored)",
            ["deployment", "model", "version", "output"],
            registry=registry,
        )
        self.duplicate_request_ids = Counter(
            "aether_monitor_duplicate_request_ids",
            "Logged prediction rows not indexed: another prediction holds their request id and row",
            ["deployment"],
            registry=registry,
        )

    def knows(self, deployment: str) -> bool:
        """Whether a report of ``deployment`` was observed since the start (see :mod:`.recall`)."""
        return deployment in self._newest

    def observe_report(
        self,
        report: pb.DriftReport,
        served: Set[Version] | None = None,
        recalled: Iterable[pb.DriftReport] = (),
    ) -> None:
        """Sets the gauges from ``report``; ``served`` is what its deployment's plan serves now (None: not
        known, and every version that reported counts). The report of a version not served sets none of
        the deployment's series: it only forgets the versions that left the plan. ``recalled``: stored
        reports, oldest first, to count for the versions with none observed since the start (the newest
        of each, read back at the deployment's first report: :mod:`.recall`)."""
        deployment = report.deployment
        # Reports come per model version, and the series per deployment: each is made of the newest
        # report of every version the deployment serves (a canary's report without a reference profile
        # cleared the primary's drifted features and its share, and flapped "detected" to -1).
        newest = self._newest.setdefault(deployment, {})
        for stored in recalled:
            newest.setdefault((stored.model_name, stored.version), _Newest.of(stored))
        # Moved to the end: the dict lists the versions in the order they last reported (see _feature).
        newest.pop((report.model_name, report.version), None)
        newest[report.model_name, report.version] = _Newest.of(report)
        if served is not None:
            # A version not served now (left the plan, or holds no traffic) shows nothing: its report,
            # a window closed after the change (idle, or requests in flight), is history, and its
            # drifted features read as the deployment's next to the NO_DRIFT of the version serving.
            for version in [v for v in newest if v not in served]:
                del newest[version]
        reports = list(newest.values())
        shown = frozenset().union(*(version.features for version in reports))
        for gauge in (self.feature_score, self.feature_drifted, self.feature_missing):
            _remove_others(gauge, deployment, "feature", shown)
        for name in shown:
            score, drifted, missing = _feature(name, reports)
            labels = (deployment, name)
            self.feature_score.labels(*labels).set(score)  # NaN when insufficient
            self.feature_drifted.labels(*labels).set(drifted)
            self.feature_missing.labels(*labels).set(missing)
        # The largest share of the served versions' scored reports; none scored: the share is 0/0, and
        # 0 read as "nothing drifted" (see the module doc).
        shares = [version.share for version in reports if version.status in _STATUS_VALUE]
        _set_or_remove(self.share, deployment, max(shares) if shares else None)
        _set_or_remove(self.detected, deployment, _detected([v.status for v in reports]))
        predictions = [version.prediction_status for version in reports]
        _set_or_remove(self.prediction_detected, deployment, _detected(predictions))

    def observe_performance(self, deployment: str, window: pb.PerformanceWindow) -> None:
        _remove_others(self.performance, deployment, "metric", window.metrics.keys())
        for metric, value in window.metrics.items():
            self.performance.labels(deployment, metric).set(value)


@dataclass(frozen=True, slots=True)
class _Newest:
    """What the deployment's series need of one version's newest report."""

    features: dict[str, tuple[float, bool, int]]  # the features it lists: score, drifted, missing
    status: pb.DriftStatus
    share: float
    prediction_status: pb.DriftStatus

    @classmethod
    def of(cls, report: pb.DriftReport) -> _Newest:
        # A feature not compared (no logged column of its name, or a column the profile has none for) is
        # not scored: it has no series, as a feature a SCHEMA_MISMATCH report does not score.
        features = {
            f.name: (f.score, f.drifted, f.missing_current) for f in report.features if not f.not_compared
        }
        return cls(features, report.status, report.drifted_share, report.prediction_status)


def _feature(name: str, reports: list[_Newest]) -> tuple[float, float, float]:
    """Feature ``name``'s score, drifted and missing over the served versions' newest ``reports`` (in the
    order they reported, oldest first) that list it: drifted 1 when any of them drifted on it, missing
    the largest, and the score of the newest of those whose drifted decides (a drifted one when any is).
    One version's report overwriting the others' made ``drifted`` flip 1/0 under an A/B plan."""
    listing = [version.features[name] for version in reports if name in version.features]
    drifted = any(is_drifted for _, is_drifted, _ in listing)
    score = [score for score, is_drifted, _ in listing if is_drifted == drifted][-1]
    return score, 1.0 if drifted else 0.0, float(max(missing for _, _, missing in listing))


def _detected(statuses: Collection[pb.DriftStatus]) -> float | None:
    """1 when any of the versions' newest reports drifted, else 0 when any was scored, else -1 (none
    scored); None when no version the deployment serves has reported."""
    if not statuses:
        return None
    return max(_STATUS_VALUE.get(status, -1.0) for status in statuses)


def _set_or_remove(gauge: Gauge, deployment: str, value: float | None) -> None:
    if value is None:
        gauge.remove(deployment)  # nothing to remove is no error
    else:
        gauge.labels(deployment).set(value)


def of_served_version(report: pb.DriftReport, served: Set[Version] | None) -> bool:
    """Whether the version ``report`` is of is one its deployment serves now, or may (``served`` not
    known)."""
    return served is None or (report.model_name, report.version) in served


def _remove_others(gauge: Gauge, deployment: str, label: str, shown: Collection[str]) -> None:
    """Removes ``deployment``'s series of ``gauge`` whose ``label`` is not in ``shown`` (see the module
    doc). The series are listed from the gauge itself, so this holds for every monitor sharing it."""
    stale = {
        sample.labels[label]
        for family in gauge.collect()
        for sample in family.samples
        if sample.labels["deployment"] == deployment and sample.labels[label] not in shown
    }
    for value in stale:
        gauge.remove(deployment, value)

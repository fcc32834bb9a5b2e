"""The running stream materializer's view of its version's validation rules, re-read every
``MaterializerOptions.rules_every_s``.

The materializer loads its view version once, at start. Rules are edited in place (UpdateValidation, a
rule edit by apply) without a new version, so a running materializer kept the rules it started with,
and with them the event rules derived from rules on aggregates (``features/aggregated_rules.py``):
events breaking a tightened rule were accepted and served, and a replay after a loosened rule was
refused by the stale rules. Every few seconds it now reads the version again and takes its rules.

Only the rules are taken: the schema of a version is immutable (a change of it is a new version), so
anything else that differs is logged, once, and the materializer keeps running as it was. A read that
fails (the database briefly down) keeps the current rules, logged at the first failure of a run of them
and when reads answer again; the next interval tries again.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import feature_registry_pb2 as pb
from control_plane.db import read_session
from control_plane.features import store

_log = logging.getLogger("aether.ingestion.stream")


class RuleRefresh:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self.failures = 0  # failed reads in a row
        self._said_other: pb.FeatureViewSpec | None = None  # the last other difference logged

    def refreshed(self, current: pb.FeatureView) -> pb.FeatureView | None:
        """``current`` with its version's stored rules, when they differ from its own; else None."""
        name, version = current.spec.name, current.version
        try:
            with read_session(self._sessions) as session:
                view = store.require_view(session, name)
                stored = store.view_message(view, store.require_version(session, view, version))
        except Exception as exc:  # any failure keeps the current rules (a deleted version: status_check)
            self.failures += 1
            if self.failures == 1:
                _log.warning(
                    "%s v%d: its validation rules could not be read again; keeping the current ones and"
                    " trying again: %s",
                    name, version, str(exc).partition("\n")[0],
                )  # fmt: skip
            return None
        if self.failures:
            _log.info(
                "%s v%d: its validation rules read again, after %d failures", name, version, self.failures
            )
            self.failures = 0
        return self._rules_of(current, stored.spec)

    def _rules_of(self, current: pb.FeatureView, stored: pb.FeatureViewSpec) -> pb.FeatureView | None:
        rules = {feature.name: feature.validation for feature in stored.features}
        if _unruled(stored) != _unruled(current.spec):
            if self._said_other != stored:
                self._said_other = stored
                _log.warning(
                    "%s v%d: the stored version differs from the one this materializer runs in more than"
                    " its validation rules (a version's schema never changes); it keeps running as it was",
                    current.spec.name, current.version,
                )  # fmt: skip
            return None
        if all(feature.validation == rules[feature.name] for feature in current.spec.features):
            return None
        updated = pb.FeatureView()
        updated.CopyFrom(current)
        for feature in updated.spec.features:
            feature.validation.CopyFrom(rules[feature.name])
        _log.info(
            "%s v%d: validation rules changed; events from now on are held to the new ones",
            current.spec.name, current.version,
        )  # fmt: skip
        return updated


def _unruled(spec: pb.FeatureViewSpec) -> pb.FeatureViewSpec:
    """``spec`` without what is edited in place: each feature's rule and description."""
    copy = pb.FeatureViewSpec()
    copy.CopyFrom(spec)
    for feature in copy.features:
        feature.ClearField("validation")
        feature.ClearField("description")
    return copy

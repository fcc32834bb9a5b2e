"""Fakes a feature view as a registry of before commit 4bcdae4 stored it: back then a rule on an
aggregated feature was not checked against what single events can keep, so a view could hold a rule
that create, new version, apply and UpdateValidation now refuse (a max of 100 on a sum). Such views are
still in databases, and must keep working."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import feature_registry_pb2 as pb
from control_plane.db import write_session
from control_plane.db.revision import bump_revision
from control_plane.features import store
from control_plane.features.store import now_us


def store_view_as_before_aggregate_rule_checks(
    sessions: sessionmaker[Session], spec: pb.FeatureViewSpec
) -> pb.FeatureView:
    """Stores ``spec`` as version 1 of a new view straight through the registry's storage layer, skipping
    every check of the registry (the refused rule included), as an old registry stored it. Its entity
    must exist."""
    with write_session(sessions) as session:
        entity = store.require_entity(session, spec.entity)
        view, version = store.insert_view(session, spec, pb.FeatureViewMetadata(), entity, now_us())
        bump_revision(session)
        return store.view_message(view, version)

"""Every table of the metadata database, in one metadata object, for migrations and schema checks.

Each concern keeps its ORM classes in its own ``tables`` module on the shared declarative ``Base``;
importing them here registers them, so Alembic and the schema test see all of them."""

from __future__ import annotations

import control_plane.audit.tables
import control_plane.db.store_identity
import control_plane.deployments.tables
import control_plane.ingestion.tables
import control_plane.jobs.tables
import control_plane.model_registry.tables
import control_plane.monitoring.tables
import control_plane.retraining.tables
import control_plane.tracking.tables  # noqa: F401  (imported for their table registrations)
from control_plane.db.models import Base

metadata = Base.metadata

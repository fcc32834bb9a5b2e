"""ORM tables of control_plane.audit (registered on control_plane.db.models.Base)."""

"""ORM tables of control_plane.tracking (registered on control_plane.db.models.Base)."""

"""ORM tables of control_plane.model_registry (registered on control_plane.db.models.Base)."""

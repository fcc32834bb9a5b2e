"""The feature registry (entities, feature views and their immutable versions) and its helpers."""

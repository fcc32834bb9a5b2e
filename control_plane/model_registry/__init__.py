"""Model registry: registered models, versions, approval, aliases, artifacts and lineage."""

"""Aether's control plane: it owns all state (SQL metadata, the feature registry...) and all slow work.
It never imports ``data_plane``; the two planes talk only over gRPC and Redis."""

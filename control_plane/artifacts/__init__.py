"""Content-addressed artifact store: blobs named by their sha256, written atomically, verified on load."""

from control_plane.artifacts.store import ArtifactRef, ArtifactStore

__all__ = ["ArtifactRef", "ArtifactStore"]

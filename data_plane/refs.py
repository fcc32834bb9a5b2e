"""Feature references: the grammar lives in ``clients.feature_refs``, shared with the control plane. A model
of the data plane may also list ``request:NAME``, a feature its Predict callers send with each row."""

from clients.feature_refs import FeatureRef, parse_ref

#: How a model's feature reference names a request-time feature (``request:NAME``).
REQUEST_PREFIX = "request:"

__all__ = ["REQUEST_PREFIX", "FeatureRef", "parse_ref"]

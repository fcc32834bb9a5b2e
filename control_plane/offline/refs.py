"""Feature references: the grammar lives in ``clients.feature_refs``, shared with the data plane."""

from clients.feature_refs import FeatureRef, parse_ref

__all__ = ["FeatureRef", "parse_ref"]

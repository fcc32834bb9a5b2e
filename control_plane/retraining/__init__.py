"""Retraining triggers, challenger/champion evaluation with quality gates, and gated promotion."""

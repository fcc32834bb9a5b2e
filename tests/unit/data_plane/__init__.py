"""Unit tests of the data plane (no servers)."""

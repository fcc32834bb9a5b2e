"""Tamper-evident audit log of every mutating operation."""

"""Tiny real job programs the jobs tests run as entrypoints."""

"""Ingestion: record validation with quarantine, batch materialization and the stream materializer."""

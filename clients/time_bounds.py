"""The times a Python datetime can hold, years 1 to 9999 in UTC, as microseconds since 1970: the dates the
offline store's partitions can name, and the times ``aetherctl`` can print as dates. One definition for
every check that keeps a stored time within them (ingestion's event times and window, a run's times)."""

from __future__ import annotations

EARLIEST_TIME_US = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z
LATEST_TIME_US = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z

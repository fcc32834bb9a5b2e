"""The demo's sizes, apart from the world they size: ``aetherctl demo --size`` offers their names, and
``control_plane.demo.world`` (which re-exports them) imports numpy and pyarrow, a tenth of a second of
every ``aetherctl`` command's start when the CLI read them from there."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Size:
    zones: int
    hours: int  # hours of history before "now"
    bookings_per_zone_hour: float
    requests_per_phase: int
    epochs: int


SIZES = {
    "small": Size(zones=200, hours=4, bookings_per_zone_hour=3.0, requests_per_phase=400, epochs=40),
    "medium": Size(zones=400, hours=12, bookings_per_zone_hour=6.0, requests_per_phase=2000, epochs=60),
}

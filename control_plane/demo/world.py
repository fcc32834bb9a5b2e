"""The synthetic city: zones, hourly weather, the calendar, booking events, and the demand relationship
the model has to learn (and that changes when the world shifts).

Everything is drawn from one seeded generator, so a run is reproducible up to the wall clock (feature
rows are stamped relative to "now": the stream materializer refuses events far in the future and the
online values have a TTL)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from control_plane.demo.sizes import SIZES as SIZES
from control_plane.demo.sizes import Size as Size

TS = pa.timestamp("us", tz="UTC")
#: The model's inputs, in order: online refs the data plane fetches for each Predict row.
MODEL_FEATURES = (
    "zone_weather:temperature_c",
    "zone_weather:precipitation_mm",
    "zone_demand:bookings_1h",
    "zone_demand:mean_fare_1h",
)
LABEL = "demand"


@dataclass(frozen=True)
class Relationship:
    """demand = a·bookings_1h + b·temperature + c·precipitation + d·mean_fare + intercept + noise."""

    bookings: float
    temperature: float
    precipitation: float
    fare: float
    intercept: float

    def demand(
        self, features: dict[str, npt.NDArray[np.float64]], rng: np.random.Generator
    ) -> npt.NDArray[np.float64]:
        noise = rng.normal(0.0, 0.5, len(features["bookings_1h"]))
        return (
            self.bookings * features["bookings_1h"]
            + self.temperature * features["temperature_c"]
            + self.precipitation * features["precipitation_mm"]
            + self.fare * features["mean_fare_1h"]
            + self.intercept
            + noise
        )


BEFORE = Relationship(bookings=2.0, temperature=0.3, precipitation=-1.5, fare=0.1, intercept=5.0)
#: After the shift: a heat wave with storms, and riders who now book by the weather, not by habit.
AFTER = Relationship(bookings=0.5, temperature=1.2, precipitation=2.0, fare=-0.2, intercept=12.0)


def hour_floor(moment: dt.datetime) -> dt.datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def weather(rng: np.random.Generator, zones: int, times: list[dt.datetime], shifted: bool) -> pa.Table:
    """One row per zone and time; after the shift temperature is ~15 °C higher and it rains a lot."""
    n = zones * len(times)
    temperature = rng.normal(30.0 if shifted else 15.0, 4.0, n)
    precipitation = rng.gamma(2.0, 4.0 if shifted else 0.5, n)
    return pa.table(
        {
            "zone_id": pa.array(np.tile(np.arange(zones, dtype=np.int64), len(times))),
            "event_ts": pa.array(np.repeat(np.array(times, dtype=object), zones).tolist(), TS),
            "temperature_c": pa.array(np.clip(temperature, -49, 59), pa.float32()),
            "precipitation_mm": pa.array(np.clip(precipitation, 0, 499), pa.float32()),
        }
    )


def calendar(zones: int, times: list[dt.datetime]) -> pa.Table:
    return pa.table(
        {
            "zone_id": pa.array(np.tile(np.arange(zones, dtype=np.int64), len(times))),
            "event_ts": pa.array(np.repeat(np.array(times, dtype=object), zones).tolist(), TS),
            "hour_of_day": pa.array(np.repeat([t.hour for t in times], zones), pa.int64()),
            "is_weekend": pa.array(np.repeat([t.weekday() >= 5 for t in times], zones)),
        }
    )


@dataclass(frozen=True)
class Booking:
    zone: str
    booked_at: str
    booking_id: str
    fare: str


def bookings(rng: np.random.Generator, size: Size, start: dt.datetime, end: dt.datetime) -> list[Booking]:
    """Poisson arrivals per zone (each zone its own rate) between start and end, in time order."""
    span_s = (end - start).total_seconds()
    rates = rng.uniform(0.3, 1.7, size.zones) * size.bookings_per_zone_hour * span_s / 3600
    counts = rng.poisson(rates)
    zones = np.repeat(np.arange(size.zones), counts)
    offsets = rng.uniform(0, span_s, len(zones))
    fares = rng.gamma(4.0, 3.0, len(zones)) + zones % 5
    order = np.argsort(offsets)
    return [
        Booking(
            str(int(zones[i])),
            (start + dt.timedelta(seconds=float(offsets[i]))).isoformat(),
            str(n + 1),
            f"{fares[i]:.2f}",
        )
        for n, i in enumerate(order)
    ]


def bad_bookings(now: dt.datetime, count: int) -> list[Booking]:
    """Events validation must refuse: a zone id that is not a number, a timestamp that is not one, and
    one booked three days in the future."""
    kinds = [
        lambda n: Booking("zone-?", now.isoformat(), str(900_000 + n), "10.0"),
        lambda n: Booking("3", "yesterday-ish", str(900_000 + n), "10.0"),
        lambda n: Booking("4", (now + dt.timedelta(days=3)).isoformat(), str(900_000 + n), "10.0"),
    ]
    return [kinds[n % len(kinds)](n) for n in range(count)]

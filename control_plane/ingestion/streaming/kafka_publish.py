"""Writing to a Kafka topic, the other way from ``kafka_source``'s reading: the ``kafka://`` URL of a
view's source, and producing events in the form the source decodes (each record's value a JSON object
of the event's fields). The quarantine's replay uses it to put corrected events back on a Kafka-sourced
streaming view's topic."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from control_plane.ingestion.streaming.kafka_records import record_value

#: How long a call to the broker (a delivery, a metadata or offsets request) may take.
TIMEOUT_S = 10.0


def parse_kafka_url(url: str) -> tuple[str, str]:
    """``kafka://host:port[,host:port]/topic`` → (bootstrap servers, topic)."""
    parts = urlsplit(url)
    topic = parts.path.strip("/")
    if parts.scheme != "kafka" or not parts.netloc or not topic or "/" in topic:
        raise ValueError(f"not a Kafka stream URL {url!r}: expected kafka://host:port/topic")
    return parts.netloc, topic


def produce(
    bootstrap: str,
    topic: str,
    records: Sequence[Mapping[str, Any]],
    config: Mapping[str, Any] | None = None,
    timeout_s: float = TIMEOUT_S,
) -> list[str | None]:
    """Produces each record as a JSON object of its fields, their values as given (what the source's
    ``kafka_records`` decodes), and waits for the broker. Returns, per record, None when the broker
    acknowledged it, else why it was not delivered.

    The delivery timeout is shorter than the wait, so every record has its report (delivered or failed)
    before this returns; one still unreported after the wait is counted as not delivered."""
    reports: list[str | None] = ["no delivery report from the broker"] * len(records)

    def report(index: int) -> Callable[[KafkaError | None, Message], None]:
        def delivered(error: KafkaError | None, _message: Message) -> None:
            reports[index] = None if error is None else str(error)

        return delivered

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,  # the producer's own retries never write a record twice
            "message.timeout.ms": int(timeout_s * 1000),
            **dict(config or {}),
        }
    )
    for index, record in enumerate(records):
        try:
            producer.produce(topic, value=record_value(record), on_delivery=report(index))
        except (BufferError, KafkaException) as exc:  # a full queue or a refused record: not sent
            reports[index] = str(exc)
        producer.poll(0)
    producer.flush(timeout_s + 5.0)
    return reports

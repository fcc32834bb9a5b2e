"""librdkafka's mock cluster, a FAKE Kafka broker: it speaks the Kafka protocol (topics, partitions,
consumer groups, committed offsets) inside this process, on a loopback port any client can reach.

It stands in for a real broker because none can be installed here: neither apt nor PyPI carries Kafka
(or a Kafka-compatible broker), and this machine reaches nothing else. Known gap, seen here: it answers
``offsets_for_times`` with "no offset", which ``KafkaSource.history`` handles by reading the partition
from its start and filtering by record time."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence

from confluent_kafka import KafkaError, Message, Producer


class KafkaMockCluster:
    def __init__(self) -> None:
        # A client configured with test.mock.num.brokers starts the cluster and keeps it while it lives.
        self._holder = Producer({"test.mock.num.brokers": 1, "log_level": 3})
        brokers = self._holder.list_topics(timeout=10).brokers.values()
        self.bootstrap = ",".join(f"{b.host}:{b.port}" for b in brokers)
        self._producer = Producer({"bootstrap.servers": self.bootstrap, "log_level": 3})

    def publish(
        self,
        topic: str,
        values: Sequence[Mapping[str, str] | bytes],
        keys: Sequence[str] | None = None,
        timestamps_ms: Sequence[int] | None = None,
    ) -> list[str]:
        """Produces the records (a mapping becomes a JSON object; bytes go as they are) and returns each
        one's ``"<partition>-<offset>"`` id, in order."""
        ids: list[str] = [""] * len(values)

        def delivered(index: int) -> Callable[[KafkaError | None, Message], None]:
            def report(error: KafkaError | None, message: Message) -> None:
                if error is not None:
                    raise RuntimeError(f"record {index} not delivered: {error}")
                ids[index] = f"{message.partition()}-{message.offset()}"

            return report

        for i, value in enumerate(values):
            payload = value if isinstance(value, bytes) else json.dumps(dict(value)).encode()
            extra = {} if timestamps_ms is None else {"timestamp": timestamps_ms[i]}
            key = None if keys is None else keys[i]
            self._producer.produce(topic, value=payload, key=key, on_delivery=delivered(i), **extra)
        self._producer.flush(10)
        if "" in ids:
            raise RuntimeError("some records were not acknowledged by the mock cluster")
        return ids

    def close(self) -> None:
        self._producer.flush(1)

"""The shadow agreement rate, read from prediction-log entries in a real Redis stream: a mirrored call the
shadow failed is a disagreement."""

from __future__ import annotations

import math

import numpy as np
import redis.asyncio

from clients.aether.v1 import monitoring_pb2 as mpb
from control_plane.retraining.shadow import agreement_rate

STREAM = "test:shadow"


def entry(
    request_id: str, role: str, variant: str, score: float, deployment: str = "eta"
) -> dict[str, bytes]:
    if math.isnan(score):  # a failed call: no outputs
        return {
            "request_id": request_id.encode(),
            "deployment": deployment.encode(),
            "variant": variant.encode(),
            "role": role.encode(),
            "ok": b"0",
            "error_code": b"INTERNAL",
        }
    return {
        "request_id": request_id.encode(),
        "deployment": deployment.encode(),
        "variant": variant.encode(),
        "role": role.encode(),
        "ok": b"1",
        "output:y": np.array([[score]], dtype=np.float32).tobytes(),
        "output:y:dtype": b"float32",
        "output:y:shape": b"1,1",
    }


async def test_agreement_rate_pairs_shadow_and_served_answers(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    served = [0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4, 0.9, 0.1]
    shadow = [0.8, 0.2, 0.9, 0.1, 0.6, 0.4, 0.4, 0.6, 0.95, 0.05]  # rows 6 and 7 cross the threshold
    for i, (a, b) in enumerate(zip(served, shadow, strict=True)):
        await client.xadd(STREAM, entry(f"r{i}", "served", "eta-v1", a))  # type: ignore[arg-type]
        await client.xadd(STREAM, entry(f"r{i}", "shadow", "eta-v2-shadow", b))  # type: ignore[arg-type]
    await client.xadd(STREAM, entry("other", "shadow", "eta-v2-shadow", 0.0, deployment="x"))  # type: ignore[arg-type]
    await client.xadd(STREAM, entry("lonely", "shadow", "eta-v2-shadow", 0.9))  # type: ignore[arg-type]
    config = mpb.MonitorConfig(
        deployment="eta", task=mpb.TASK_TYPE_CLASSIFICATION, positive_class=1, decision_threshold=0.5
    )
    rate, rows = await agreement_rate(client, STREAM, "eta", "eta-v2-shadow", 0, config)
    assert rows == 10 and rate == 0.8
    none, zero = await agreement_rate(client, STREAM, "eta", "eta-v9-shadow", 0, config)
    assert none is None and zero == 0
    await client.aclose()


async def test_a_call_the_shadow_failed_is_a_disagreement(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    nan = math.nan
    served = [0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4, 0.9, nan]
    shadow = [0.8, 0.2, 0.9, nan, 0.6, nan, 0.4, nan, 0.95, nan]  # 3 failed, 1 differs; r9 failed both
    for i, (a, b) in enumerate(zip(served, shadow, strict=True)):
        await client.xadd(STREAM, entry(f"r{i}", "served", "eta-v1", a))  # type: ignore[arg-type]
        await client.xadd(STREAM, entry(f"r{i}", "shadow", "eta-v2-shadow", b))  # type: ignore[arg-type]
    await client.xadd(STREAM, entry("r0", "shadow", "eta-v7-shadow", nan))  # type: ignore[arg-type]
    config = mpb.MonitorConfig(
        deployment="eta", task=mpb.TASK_TYPE_CLASSIFICATION, positive_class=1, decision_threshold=0.5
    )
    rate, rows = await agreement_rate(client, STREAM, "eta", "eta-v2-shadow", 0, config)
    assert rows == 9 and rate == 5 / 9  # r9 compares nothing: the served call failed too

    # A challenger that fails every mirrored call agrees on nothing (it used to leave no pair at all).
    for i in range(5):
        await client.xadd(STREAM, entry(f"q{i}", "served", "eta-v1", 0.9))  # type: ignore[arg-type]
        await client.xadd(STREAM, entry(f"q{i}", "shadow", "eta-v3-shadow", nan))  # type: ignore[arg-type]
    assert await agreement_rate(client, STREAM, "eta", "eta-v3-shadow", 0, config) == (0.0, 5)
    await client.aclose()


def answered(request_id: str, role: str, variant: str, outputs: dict[str, np.ndarray]) -> dict[str, bytes]:
    """An answered call's entry with these outputs, in this order, as the data plane logs them."""
    fields = {
        "request_id": request_id.encode(),
        "deployment": b"eta",
        "variant": variant.encode(),
        "role": role.encode(),
        "ok": b"1",
    }
    for name, array in outputs.items():
        fields[f"output:{name}"] = array.tobytes()
        fields[f"output:{name}:dtype"] = str(array.dtype).encode()
        fields[f"output:{name}:shape"] = ",".join(str(n) for n in array.shape).encode()
    return fields


async def test_class_codes_are_compared_as_classes(redis_url: str) -> None:
    # A multiclass classifier's int64 label output: class 2 served, class 1 shadowed. Read as a score,
    # both codes were >= 0.5 and so "the positive class": every row agreed.
    client = redis.asyncio.Redis.from_url(redis_url)
    config = mpb.MonitorConfig(deployment="eta", task=mpb.TASK_TYPE_CLASSIFICATION)
    for i in range(4):
        shadow_class = 1 if i < 3 else 2
        served = {"label": np.array([2], dtype=np.int64)}
        shadowed = {"label": np.array([shadow_class], dtype=np.int64)}
        await client.xadd(STREAM, answered(f"m{i}", "served", "eta-v1", served))  # type: ignore[arg-type]
        await client.xadd(STREAM, answered(f"m{i}", "shadow", "eta-v4-shadow", shadowed))  # type: ignore[arg-type]
    assert await agreement_rate(client, STREAM, "eta", "eta-v4-shadow", 0, config) == (0.25, 4)
    await client.aclose()


async def test_the_output_the_monitor_reads_is_compared(redis_url: str) -> None:
    # Labels first (the model's own 0.5 threshold: both say 1), then the score, which the monitor reads
    # at its 0.7 threshold: 0.6 is class 0 and 0.8 class 1, so the two answers differ.
    client = redis.asyncio.Redis.from_url(redis_url)
    config = mpb.MonitorConfig(
        deployment="eta",
        task=mpb.TASK_TYPE_CLASSIFICATION,
        positive_class=1,
        decision_threshold=0.7,
        prediction_output="score",
    )
    for role, variant, score in (("served", "eta-v1", 0.6), ("shadow", "eta-v5-shadow", 0.8)):
        outputs = {"label": np.array([1], dtype=np.int64), "score": np.array([[score]], dtype=np.float32)}
        await client.xadd(STREAM, answered("p0", role, variant, outputs))  # type: ignore[arg-type]
    assert await agreement_rate(client, STREAM, "eta", "eta-v5-shadow", 0, config) == (0.0, 1)
    first_output = mpb.MonitorConfig(deployment="eta", task=mpb.TASK_TYPE_CLASSIFICATION)
    assert await agreement_rate(client, STREAM, "eta", "eta-v5-shadow", 0, first_output) == (1.0, 1)
    await client.aclose()


async def test_an_undecodable_shadow_answer_is_a_disagreement(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    config = mpb.MonitorConfig(deployment="eta", task=mpb.TASK_TYPE_CLASSIFICATION)
    label = {"label": np.array([1], dtype=np.int64)}
    for i in range(2):
        await client.xadd(STREAM, answered(f"u{i}", "served", "eta-v1", label))  # type: ignore[arg-type]
    await client.xadd(STREAM, answered("u0", "shadow", "eta-v6-shadow", label))  # type: ignore[arg-type]
    broken = answered("u1", "shadow", "eta-v6-shadow", label) | {"output:label": b"\x01\x02\x03"}
    await client.xadd(STREAM, broken)  # type: ignore[arg-type]
    assert await agreement_rate(client, STREAM, "eta", "eta-v6-shadow", 0, config) == (0.5, 2)
    await client.aclose()

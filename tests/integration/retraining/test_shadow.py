"""The shadow agreement rate, read from prediction-log entries in a real Redis stream: a mirrored call the
shadow failed is a disagreement."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import redis.asyncio

from clients.aether.v1 import monitoring_pb2 as mpb
from control_plane.model_registry.model_classes import DeclaredClasses, classes_in_model
from control_plane.retraining.shadow import Agreement, agreement_rate
from tests.unit.retraining.models import softmax_classifier, with_classes

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
    rate, rows, _ = await agreement_rate(client, STREAM, "eta", "eta-v2-shadow", 0, config)
    assert rows == 10 and rate == 0.8
    none, zero, _ = await agreement_rate(client, STREAM, "eta", "eta-v9-shadow", 0, config)
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
    rate, rows, _ = await agreement_rate(client, STREAM, "eta", "eta-v2-shadow", 0, config)
    assert rows == 9 and rate == 5 / 9  # r9 compares nothing: the served call failed too

    # A challenger that fails every mirrored call agrees on nothing (it used to leave no pair at all).
    for i in range(5):
        await client.xadd(STREAM, entry(f"q{i}", "served", "eta-v1", 0.9))  # type: ignore[arg-type]
        await client.xadd(STREAM, entry(f"q{i}", "shadow", "eta-v3-shadow", nan))  # type: ignore[arg-type]
    assert await agreement_rate(client, STREAM, "eta", "eta-v3-shadow", 0, config) == Agreement(0.0, 5)
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
    assert await agreement_rate(client, STREAM, "eta", "eta-v4-shadow", 0, config) == Agreement(0.25, 4)
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
    assert await agreement_rate(client, STREAM, "eta", "eta-v5-shadow", 0, config) == Agreement(0.0, 1)
    first_output = mpb.MonitorConfig(deployment="eta", task=mpb.TASK_TYPE_CLASSIFICATION)
    assert await agreement_rate(client, STREAM, "eta", "eta-v5-shadow", 0, first_output) == Agreement(1.0, 1)
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
    assert await agreement_rate(client, STREAM, "eta", "eta-v6-shadow", 0, config) == Agreement(0.5, 2)
    await client.aclose()


def run_model(model: bytes, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    scores: npt.NDArray[np.float32] = session.run(["probabilities"], {"x": features})[0]
    return scores


def logged(
    request_id: str, role: str, variant: str, version: int, scores: npt.NDArray[np.float32]
) -> dict[str, bytes]:
    """A call's entry as the data plane logs it, naming the model version that answered."""
    fields = answered(request_id, role, variant, {"probabilities": scores})
    return fields | {"model": b"eta", "version": str(version).encode()}


async def shadowed_by(
    client: redis.asyncio.Redis, prefix: str, champion: bytes, challenger: bytes, shadow: str
) -> Agreement:
    """Both real models run on the same 40 rows, logged as the data plane logs a served call (version 1)
    and its mirrored copy (version 2), then compared with the classes their ONNX files declare."""
    features = np.random.default_rng(4).standard_normal((40, 4)).astype(np.float32)
    for i, row in enumerate(features):
        for role, variant, model, version in (
            ("served", "eta-v1", champion, 1),
            ("shadow", shadow, challenger, 2),
        ):
            scores = run_model(model, row[np.newaxis, :])
            await client.xadd(STREAM, logged(f"{prefix}{i}", role, variant, version, scores))  # type: ignore[arg-type]
    models = {("eta", 1): champion, ("eta", 2): challenger}

    def classes_of(model: str, version: int) -> DeclaredClasses | None:
        return classes_in_model(models[(model, version)])

    config = mpb.MonitorConfig(deployment="eta", task=mpb.TASK_TYPE_CLASSIFICATION)
    return await agreement_rate(client, STREAM, "eta", shadow, 0, config, classes_of=classes_of)


async def test_columns_are_compared_by_class_label_not_position(redis_url: str) -> None:
    # The champion scores classes [10, 20, 30], the challenger is the same model with its columns in the
    # order [30, 10, 20] (its aether.classes says so): the two always predict the same class. Compared
    # by column, they agreed on none of the 40 rows.
    client = redis.asyncio.Redis.from_url(redis_url)
    weights = np.random.default_rng(3).standard_normal((4, 3))
    champion = with_classes(softmax_classifier(weights), [10, 20, 30])
    challenger = with_classes(softmax_classifier(weights[:, [2, 0, 1]]), [30, 10, 20])
    assert await shadowed_by(client, "c", champion, challenger, "eta-v2-shadow") == Agreement(1.0, 40)
    # Text labels are matched the same way.
    champion = with_classes(softmax_classifier(weights), ["cat", "dog", "eel"])
    challenger = with_classes(softmax_classifier(weights[:, [1, 2, 0]]), ["dog", "eel", "cat"])
    assert await shadowed_by(client, "t", champion, challenger, "eta-v2-text") == Agreement(1.0, 40)
    await client.aclose()


async def test_answers_of_other_classes_or_unlabelled_columns_are_not_comparable(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    weights = np.random.default_rng(3).standard_normal((4, 3))
    champion = with_classes(softmax_classifier(weights), [10, 20, 30])
    other_classes = with_classes(softmax_classifier(weights), [10, 20, 40])
    found = await shadowed_by(client, "o", champion, other_classes, "eta-v2-other")
    assert found == Agreement(
        None,
        0,
        "the shadow eta v2 declares the classes [10, 20, 40] and the primary eta v1 [10, 20, 30]: their"
        " predictions are not of the same classes",
    )
    unlabelled = softmax_classifier(weights[:, [2, 0, 1]])
    found = await shadowed_by(client, "u", champion, unlabelled, "eta-v2-unlabelled")
    assert found == Agreement(
        None,
        0,
        "eta v2 declares no classes (aether.classes) for its 3 score columns while eta v1 declares [10, 20,"
        " 30], so which column is which class is unknown",
    )
    # Neither declares any: read as the monitor reads them, an index as the label it equals.
    found = await shadowed_by(
        client, "n", softmax_classifier(weights), softmax_classifier(weights), "eta-v2-none"
    )
    assert found == Agreement(1.0, 40)
    await client.aclose()

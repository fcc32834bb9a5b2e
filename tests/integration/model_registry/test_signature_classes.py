"""A version's two statements of its classes must agree: the signature's ``classes`` (which the monitor maps
output columns through) and its ONNX artifact's ``aether.classes`` metadata (which the evaluation gates
and the shadow agreement read). Registered over real gRPC with real ONNX artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clients.aether.v1 import model_registry_pb2 as pb
from clients.errors import InvalidArgument, NotFound
from clients.sdk.models import ModelRegistryClient, signature
from tests.unit.retraining.models import softmax_classifier, with_classes

WEIGHTS = np.arange(12, dtype=np.float64).reshape(4, 3)


def classifier_sig(classes: list[str]) -> pb.ModelSignature:
    return signature([("x", "float32", (-1, 4))], [("probabilities", "float32", (-1, 3))], classes=classes)


def upload(models: ModelRegistryClient, tmp_path: Path, onnx: bytes) -> str:
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx)
    return str(models.artifacts.upload_file(path).sha256)


def test_signature_classes_differing_from_the_artifacts_are_refused(
    models: ModelRegistryClient, tmp_path: Path
) -> None:
    sha256 = upload(models, tmp_path, with_classes(softmax_classifier(WEIGHTS), [10, 20, 30]))
    with pytest.raises(InvalidArgument) as refused:
        models.register_version("eta", artifact_sha256=sha256, signature=classifier_sig(["10", "20", "40"]))
    message = str(refused.value)
    assert "signature.classes" in message and "aether.classes" in message
    assert "['10', '20', '40']" in message and "[10, 20, 30]" in message
    # Column order is part of it: column 0 would be label 20 to the monitor and 10 to the gates.
    with pytest.raises(InvalidArgument):
        models.register_version("eta", artifact_sha256=sha256, signature=classifier_sig(["20", "10", "30"]))
    with pytest.raises(InvalidArgument):
        models.register_version("eta", artifact_sha256=sha256, signature=classifier_sig(["10", "20"]))
    with pytest.raises(NotFound):  # nothing registered, not even the model
        models.get_model("eta")


def test_agreeing_or_one_sided_classes_register(models: ModelRegistryClient, tmp_path: Path) -> None:
    declared = upload(models, tmp_path, with_classes(softmax_classifier(WEIGHTS), [10, 20, 30]))
    # The same labels, spelled as the signature's text (the built-in trainer writes "10.0"; JSON has 10).
    same = models.register_version(
        "eta", artifact_sha256=declared, signature=classifier_sig(["10.0", "20", "30"])
    )
    assert list(same.signature.classes) == ["10.0", "20", "30"]
    # Only one side states them: nothing to compare.
    assert models.register_version("eta", artifact_sha256=declared).version == 2
    bare = upload(models, tmp_path, softmax_classifier(WEIGHTS))
    assert (
        models.register_version(
            "eta", artifact_sha256=bare, signature=classifier_sig(["a", "b", "c"])
        ).version
        == 3
    )
    # Text labels compare as text.
    text = upload(models, tmp_path, with_classes(softmax_classifier(WEIGHTS), ["cat", "dog", "eel"]))
    assert models.register_version(
        "eta", artifact_sha256=text, signature=classifier_sig(["cat", "dog", "eel"])
    )
    with pytest.raises(InvalidArgument):
        models.register_version("eta", artifact_sha256=text, signature=classifier_sig(["cat", "dog", "emu"]))
    # An artifact that is not an ONNX file declares nothing.
    opaque = upload(models, tmp_path, b"not an onnx model " * 50)
    assert models.register_version("eta", artifact_sha256=opaque, signature=classifier_sig(["x", "y", "z"]))

"""A model's classes as its ONNX file declares them: the metadata ``aether.classes`` (JSON, one label per
score column, in column order; the built-in trainer's export writes it beside the signature's
``classes``). The evaluation gates map a challenger's and a champion's score columns to labels through
them, and the shadow agreement matches a shadow's columns with the primary's by them.

The registry's signature lists them too (``ModelSignature.classes``, which the monitor maps a version's
output columns through), so the two could disagree and the monitor and the gates judge one model by
different labels: registration refuses a version whose two lists differ (:func:`check_same_classes`,
with the artifact's read by :func:`classes_in_artifact`)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import onnxruntime as ort
from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.message import DecodeError

from clients.errors import InvalidArgument

#: The ONNX metadata key that lists a classifier's classes, one per score column, as JSON.
CLASSES_METADATA = "aether.classes"

#: Declared labels, as the JSON holds them (numbers or text), in column order.
DeclaredClasses = tuple[object, ...]


def declared_classes(session: ort.InferenceSession) -> DeclaredClasses | None:
    """The labels ``session``'s model declares in ``aether.classes``; None when it declares none, or its
    value is not a JSON list (read as declaring none, as the evaluation gates always read it)."""
    return _parsed(session.get_modelmeta().custom_metadata_map.get(CLASSES_METADATA))


def _parsed(text: str | None) -> DeclaredClasses | None:
    if text is None:
        return None
    try:
        values = json.loads(text)
    except ValueError:
        return None
    return tuple(values) if isinstance(values, list) else None


def classes_in_model(model: bytes) -> DeclaredClasses | None:
    """:func:`declared_classes` of the ONNX model ``model`` (its bytes)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return declared_classes(ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]))


def _metadata_message() -> type:
    """A message type holding only ``ModelProto.metadata_props`` (field 14: ``StringStringEntryProto``
    ``key`` = 1, ``value`` = 2, as onnx.proto numbers them): parsing a model with it reads the metadata
    and skips the graph, with no ONNX Runtime session built (a model with custom operators has one too)."""
    file = descriptor_pb2.FileDescriptorProto(name="aether_onnx_metadata.proto", package="aether_onnx")
    entry = file.message_type.add(name="Entry")
    for number, name in ((1, "key"), (2, "value")):
        entry.field.add(
            name=name,
            number=number,
            type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
            label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        )
    model = file.message_type.add(name="Model")
    model.field.add(
        name="metadata_props",
        number=14,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
        type_name=".aether_onnx.Entry",
        label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
    )
    return message_factory.GetMessages([file])["aether_onnx.Model"]


_MODEL_METADATA = _metadata_message()


def classes_in_artifact(model: bytes) -> DeclaredClasses | None:
    """The ``aether.classes`` of the artifact ``model`` (its bytes), read from its ONNX metadata alone;
    None when it declares none, or is no ONNX model (nothing to compare a signature with)."""
    parsed = _MODEL_METADATA()
    try:
        parsed.ParseFromString(model)
    except (DecodeError, UnicodeDecodeError):  # not a protobuf message: no ONNX model, no metadata
        return None
    found = [entry.value for entry in parsed.metadata_props if entry.key == CLASSES_METADATA]
    return _parsed(found[-1]) if found else None


def check_same_classes(signature: Sequence[str], declared: DeclaredClasses | None) -> None:
    """``InvalidArgument`` naming both lists when a version's signature ``classes`` and its artifact's
    ``aether.classes`` both list labels and differ, in count or in any column's label. Labels are equal
    as the readers compare them: as numbers when both are numbers (``"10.0"`` in a signature is ``10`` in
    the JSON), else as text."""
    if not signature or declared is None:
        return
    if len(signature) == len(declared) and all(
        _same_label(ours, theirs) for ours, theirs in zip(signature, declared, strict=True)
    ):
        return
    raise InvalidArgument(
        f"signature.classes: {list(signature)} differ from the artifact's {CLASSES_METADATA} "
        f"{json.dumps(list(declared))} (one label per output column, in column order): the monitor "
        "maps outputs through the signature's and the retraining gates through the artifact's, so they "
        "must list the same labels in the same order"
    )


def _same_label(ours: str, theirs: object) -> bool:
    a, b = _number(ours), _number(theirs)
    if a is not None and b is not None:
        return a == b
    return ours == str(theirs)


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(str(value))
    except ValueError:
        return None
    return number if math.isfinite(number) else None

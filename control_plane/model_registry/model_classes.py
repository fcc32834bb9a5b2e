"""A model's classes as its ONNX file declares them: the metadata ``aether.classes`` (JSON, one label per
score column, in column order; the built-in trainer's export writes it beside the signature's
``classes``). The evaluation gates map a challenger's and a champion's score columns to labels through
them, and the shadow agreement matches a shadow's columns with the primary's by them."""

from __future__ import annotations

import json

import onnxruntime as ort

#: The ONNX metadata key that lists a classifier's classes, one per score column, as JSON.
CLASSES_METADATA = "aether.classes"

#: Declared labels, as the JSON holds them (numbers or text), in column order.
DeclaredClasses = tuple[object, ...]


def declared_classes(session: ort.InferenceSession) -> DeclaredClasses | None:
    """The labels ``session``'s model declares in ``aether.classes``; None when it declares none, or its
    value is not a JSON list (read as declaring none, as the evaluation gates always read it)."""
    text = session.get_modelmeta().custom_metadata_map.get(CLASSES_METADATA)
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

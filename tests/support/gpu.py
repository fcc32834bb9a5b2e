"""Whether ONNX Runtime can run on a CUDA device here. ``get_available_providers`` lists the CUDA provider
wherever onnxruntime-gpu is installed, GPU or not; only a session that starts on it proves a device."""

from __future__ import annotations

import functools

import onnxruntime as ort

from data_plane.runtime.onnx import OnnxOptions, OnnxRuntimeSession
from tests.support import onnx_models


@functools.cache
def cuda_usable() -> bool:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    model = onnx_models.affine().SerializeToString()
    session = OnnxRuntimeSession(model, OnnxOptions(allowed_providers=("CUDAExecutionProvider",)))
    return session.providers[0] == "CUDAExecutionProvider"

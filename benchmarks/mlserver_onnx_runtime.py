"""A minimal MLServer runtime serving an ONNX model with ONNX Runtime (MLServer 1.7 ships none), used by
``benchmarks/serving.py`` as the MLServer baseline. It runs in MLServer's own virtual environment
(``.venv-bench-mlserver``), never in the project's; the benchmark copies it next to model-settings.json."""

from __future__ import annotations

import onnxruntime as ort
from mlserver import MLModel  # type: ignore[import-not-found]
from mlserver.codecs import NumpyCodec  # type: ignore[import-not-found]
from mlserver.types import InferenceRequest, InferenceResponse  # type: ignore[import-not-found]


class OnnxModel(MLModel):  # type: ignore[misc]
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            self.settings.parameters.uri, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        features = NumpyCodec.decode_input(payload.inputs[0])
        (scores,) = self._session.run(None, {self._input: features})
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("output", scores)])

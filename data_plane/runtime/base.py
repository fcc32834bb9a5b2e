"""What the model manager needs from an inference runtime: run named input arrays, get named outputs.

``run`` is called from a worker thread (never on the event loop); implementations release the GIL while
the model computes (ONNX Runtime and TensorRT both do), so the event loop keeps serving meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]


class Runtime(Protocol):
    @property
    def description(self) -> str:
        """What runs the model, e.g. ``onnxruntime 1.22 [CPUExecutionProvider]``."""
        ...

    @property
    def waits_on_device(self) -> bool:
        """Whether a run mostly waits on an accelerator (copies, kernel launches, synchronisation) rather
        than computing on this CPU. Such runs never go on the event loop, however short: the loop would
        sit idle through the wait instead of taking the next requests (see ``data_plane.batching``)."""
        ...

    def run(self, feeds: Mapping[str, Array]) -> dict[str, Array]: ...

    def close(self) -> None: ...


def as_contiguous(array: Array, dtype: np.dtype[Any]) -> Array:
    """The array as the runtime wants it: C-contiguous, in the model's dtype (a no-op when it already is)."""
    return np.ascontiguousarray(array, dtype=dtype)

"""Every random-number state a training run depends on, captured and restored as plain data.

Bitwise-equal resume needs *all* of them: python ``random`` (user code, shuffles), numpy's global
generator, torch's CPU generator (initialisation, dropout), each CUDA device's generator, and any
explicit generator the job owns (a batch-order ``torch.Generator``, a ``numpy.random.Generator``).

The captured form holds only tensors, lists, tuples, strings, ints and floats, so a checkpoint loads
with ``torch.load(weights_only=True)`` — no arbitrary unpickling of a file found on disk.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

#: A generator the job owns and wants restored with the checkpoint.
OwnedGenerator = torch.Generator | np.random.Generator


def capture_rng_state(generators: Mapping[str, OwnedGenerator] | None = None) -> dict[str, Any]:
    """The current state of every global generator and of ``generators`` (by name)."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    keys = np.asarray(keys, dtype=np.int64)  # uint32 has no torch.load(weights_only=True)-safe twin
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [str(kind), torch.from_numpy(keys), position, has_gauss, cached_gaussian],
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "owned": {},
    }
    for name, generator in (generators or {}).items():
        if isinstance(generator, torch.Generator):
            state["owned"][name] = {"torch": generator.get_state()}
        else:
            state["owned"][name] = {"numpy": _jsonable_bit_state(generator.bit_generator.state)}
    return state


def restore_rng_state(
    state: Mapping[str, Any], generators: Mapping[str, OwnedGenerator] | None = None
) -> None:
    """Puts every generator back as :func:`capture_rng_state` found it. A generator in ``generators``
    without a saved state is a ``KeyError`` (a resumed run would silently diverge otherwise)."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch_cpu"])
    cuda_states = state["torch_cuda"]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    for name, generator in (generators or {}).items():
        saved = state["owned"][name]
        if isinstance(generator, torch.Generator):
            generator.set_state(saved["torch"])
        else:
            generator.bit_generator.state = saved["numpy"]


def _jsonable_bit_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """A numpy bit-generator state with arrays turned into lists (MT19937 keeps its key as an array)."""
    plain: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, Mapping):
            plain[key] = _jsonable_bit_state(value)
        elif isinstance(value, np.ndarray):
            plain[key] = value.tolist()
        else:
            plain[key] = value
    return plain

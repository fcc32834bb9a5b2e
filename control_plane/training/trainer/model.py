"""The MLP and its serving form.

:class:`TabularMLP` takes raw features: missing values (NaN) are replaced by the training mean, then
features are standardised with the training statistics held as buffers — so they are saved in every
checkpoint and baked into the exported ONNX graph. :class:`ServingModel` adds the output transform
(softmax probabilities for classification), which is what ONNX exports and serving returns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from torch import nn


class TabularMLP(nn.Module):
    def __init__(
        self,
        mean: npt.NDArray[np.float32],
        std: npt.NDArray[np.float32],
        hidden: Sequence[int],
        n_outputs: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        layers: list[nn.Module] = []
        width = int(mean.shape[0])
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, n_outputs))
        self.body = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Regression predictions ``[batch, 1]`` or classification logits ``[batch, classes]``."""
        mean, std = self.get_buffer("mean"), self.get_buffer("std")
        filled = torch.where(torch.isfinite(features), features, mean)
        output: torch.Tensor = self.body((filled - mean) / std)
        return output


class ServingModel(nn.Module):
    """What serving runs: predictions for regression, class probabilities for classification."""

    def __init__(self, model: TabularMLP, classification: bool) -> None:
        super().__init__()
        self.model = model
        self.classification = classification

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = self.model(features)
        return torch.softmax(output, dim=1) if self.classification else output

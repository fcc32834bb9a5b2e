"""The built-in trainer's settings, read from the job's hyperparameters (strings; defaults below).

========================  ==============  =====================================================
hyperparameter            default         meaning
========================  ==============  =====================================================
``task``                  ``regression``  or ``classification``
``label``                 (required)      label column of the entity rows
``hidden``                ``64,32``       hidden layer widths
``dropout``               ``0``           dropout after each hidden layer
``lr``                    ``0.001``       Adam learning rate
``weight_decay``          ``0``           Adam weight decay
``lr_step_epochs``        ``10``          StepLR period (epochs)
``lr_gamma``              ``1``           StepLR factor (1 = constant learning rate)
``epochs``                ``20``
``batch_size``            ``256``         global batch: each of N data-parallel ranks takes 1/N
``seed``                  ``0``           seeds every RNG; same seed, same data => same weights
``threads``               ``1``           torch intra-op threads (fixed for determinism)
``holdout_fraction``      ``0.2``         share of rows held out for evaluation
``eval_every``            ``1``           held-out loss every N epochs and after the last (0: last only)
``onnx_tolerance``        ``1e-4``        max abs difference ONNX Runtime vs torch
``model_name``            the job name    registered model name
``register``              ``true``        register a model version at the end
``log_every_batch``       ``false``       per-batch loss points as well
``keep_last_checkpoints`` ``3``           checkpoints kept, at least 1 (any job's SDK reads it)
========================  ==============  =====================================================

With ``gpus`` > 1 the job trains data-parallel (one torchrun rank per GPU, gradients averaged):
``batch_size`` stays the batch of one optimizer step over all ranks, so each rank takes
``ceil(batch_size / N)`` rows per step and the effective batch is that times N — ``batch_size`` itself
when it divides by N. The same hyperparameters thus train the same way on any number of GPUs (no
learning-rate rescaling), and a run's epoch curve has one point per epoch, averaged over all ranks' rows.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from clients.errors import InvalidArgument
from control_plane.training.spec import Hyperparameters

TASKS = ("regression", "classification")
MAX_SEED = 2**64 - 1


@dataclass(frozen=True)
class TrainerConfig:
    task: str
    label: str
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.0
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_step_epochs: int = 10
    lr_gamma: float = 1.0
    epochs: int = 20
    batch_size: int = 256
    seed: int = 0
    threads: int = 1
    holdout_fraction: float = 0.2
    eval_every: int = 1
    onnx_tolerance: float = 1e-4
    model_name: str = "model"
    register: bool = True
    checkpoint_interval: int = 1

    @classmethod
    def from_hyperparameters(
        cls, hp: Hyperparameters, *, job_name: str, checkpoint_interval: int = 1
    ) -> TrainerConfig:
        label = hp.text("label", "")
        if not label:
            raise InvalidArgument("hyperparameter 'label' (the label column) is required")
        config = cls(
            task=hp.text("task", "regression"),
            label=label,
            hidden=hp.integers("hidden", cls.hidden),
            dropout=hp.number("dropout", cls.dropout),
            lr=hp.number("lr", cls.lr),
            weight_decay=hp.number("weight_decay", cls.weight_decay),
            lr_step_epochs=hp.integer("lr_step_epochs", cls.lr_step_epochs),
            lr_gamma=hp.number("lr_gamma", cls.lr_gamma),
            epochs=hp.integer("epochs", cls.epochs),
            batch_size=hp.integer("batch_size", cls.batch_size),
            seed=hp.integer("seed", cls.seed),
            threads=hp.integer("threads", cls.threads),
            holdout_fraction=hp.number("holdout_fraction", cls.holdout_fraction),
            eval_every=hp.integer("eval_every", cls.eval_every),
            onnx_tolerance=hp.number("onnx_tolerance", cls.onnx_tolerance),
            model_name=hp.text("model_name", model_name_from(job_name)),
            register=hp.flag("register", cls.register),
            checkpoint_interval=checkpoint_interval,
        )
        config.check()
        return config

    def check(self) -> None:
        """INVALID_ARGUMENT naming the first setting training would fail on (or train nonsense with), so a
        bad value is refused once (at submission, :func:`control_plane.jobs.spec.validate`), not with an
        unnamed error from torch or numpy on every attempt."""
        if self.task not in TASKS:
            raise InvalidArgument(f"hyperparameter 'task': {self.task!r} is not one of {TASKS}")
        if any(width < 1 for width in self.hidden):
            raise InvalidArgument(f"hyperparameter 'hidden': widths must be >= 1, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise InvalidArgument(f"hyperparameter 'dropout' must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise InvalidArgument(
                f"hyperparameter 'holdout_fraction' must be in (0, 1), got {self.holdout_fraction}"
            )
        for name in ("epochs", "batch_size", "threads", "lr_step_epochs"):
            if getattr(self, name) < 1:
                raise InvalidArgument(f"hyperparameter {name!r} must be >= 1, got {getattr(self, name)}")
        if self.eval_every < 0:
            raise InvalidArgument(f"hyperparameter 'eval_every' must be >= 0, got {self.eval_every}")
        # numpy's default_rng takes any non-negative integer, torch's generators an unsigned 64-bit one.
        if not 0 <= self.seed <= MAX_SEED:
            raise InvalidArgument(f"hyperparameter 'seed' must be >= 0 and <= 2**64 - 1, got {self.seed}")
        # NaN passes every comparison below unnoticed, and an infinity is no learning rate or tolerance.
        for name in ("lr", "weight_decay", "lr_gamma", "onnx_tolerance"):
            if not math.isfinite(getattr(self, name)):
                raise InvalidArgument(
                    f"hyperparameter {name!r} must be a finite number, got {getattr(self, name)}"
                )
        for name in ("lr", "lr_gamma", "onnx_tolerance"):
            if getattr(self, name) <= 0:
                raise InvalidArgument(f"hyperparameter {name!r} must be > 0, got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise InvalidArgument(f"hyperparameter 'weight_decay' must be >= 0, got {self.weight_decay}")

    def as_hyperparameters(self) -> dict[str, str]:
        """Every setting that shapes the model, as text: what the model version records (defaults
        included, so the version says exactly how it was trained). Left out, as they do not change the
        weights: ``register``, and the job-side bookkeeping this class does not hold
        (``keep_last_checkpoints``, ``log_every_batch``: how many checkpoints are kept, whether per-batch
        losses are logged); the job's tracking run records them when the spec sets them."""
        values = asdict(self)
        values["hidden"] = ",".join(str(width) for width in self.hidden)
        values.pop("register")
        return {
            key: str(value).lower() if isinstance(value, bool) else str(value)
            for key, value in values.items()
        }


def model_name_from(job_name: str) -> str:
    """A registry-valid model name (lowercase, ``[a-z][a-z0-9_-]*``) from a job name."""
    cleaned = re.sub(r"[^a-z0-9_-]+", "-", job_name.lower()).strip("-")
    if not cleaned or not cleaned[0].isalpha():
        cleaned = f"model-{cleaned}" if cleaned else "model"
    return cleaned

"""The training context from the launch environment: identity, hyperparameters, checkpoints that carry
the epoch metrics, outputs.json written where the control plane reads it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from clients.errors import InvalidArgument
from control_plane.jobs.launch_env import LaunchEnv
from control_plane.jobs.spec import spec_from_mapping, spec_to_json
from control_plane.training.checkpoint import TrainingState
from control_plane.training.context import CHECKPOINT_FLUSH_S, TrainingContext


def launch(tmp_path: Path, attempt: int = 1) -> LaunchEnv:
    spec_path = tmp_path / "spec.json"
    spec = spec_from_mapping(
        {
            "name": "demo",
            "entrypoint": {"module": "my.job"},
            "hyperparameters": {"lr": 0.1, "log_every_batch": True, "keep_last_checkpoints": 2},
            "checkpoint_every_epochs": 2,
        }
    )
    spec_path.write_text(spec_to_json(spec))
    return LaunchEnv(
        job_id="j1",
        attempt=attempt,
        spec_path=spec_path,
        checkpoint_dir=tmp_path / "job" / "checkpoints",
        control_plane_addr="127.0.0.1:1",  # nothing listens: these tests never touch the network
        tracking_experiment="exp",
        run_id="r1",
    )


def test_from_env_reads_the_launch_contract(tmp_path: Path) -> None:
    ctx = TrainingContext.from_env(launch(tmp_path, attempt=2).to_env())
    assert (ctx.job_id, ctx.attempt, ctx.checkpoint_dir) == ("j1", 2, tmp_path / "job" / "checkpoints")
    assert ctx.hyperparameters.number("lr", 0.0) == 0.1 and ctx.log_per_batch
    assert (ctx.spec.checkpoint_interval, ctx.checkpoints.keep_last) == (2, 2)


def test_missing_launch_variables_name_the_variable() -> None:
    with pytest.raises(KeyError, match="AETHER_JOB_ID"):
        TrainingContext.from_env({})


def test_checkpoints_carry_the_epoch_metrics(tmp_path: Path) -> None:
    ctx = TrainingContext(launch(tmp_path), TrainingContext.from_env(launch(tmp_path).to_env()).spec)
    ctx._epoch_metrics = {0: {"loss": 1.5}, 1: {"loss": 0.5}}  # what log_metrics records
    path = ctx.checkpoint(TrainingState(torch.nn.Linear(2, 1), epoch=2))
    assert path is not None and path.parent == ctx.checkpoint_dir
    checkpoint = ctx.checkpoints.resume()
    assert checkpoint is not None and checkpoint.sdk == {
        "epoch_metrics": {0: {"loss": 1.5}, 1: {"loss": 0.5}}
    }


def test_outputs_json_is_written_beside_the_checkpoint_folder(tmp_path: Path) -> None:
    ctx = TrainingContext.from_env(launch(tmp_path).to_env())
    path = ctx.write_outputs({"model": "demo", "version": 3})
    assert path == tmp_path / "job" / "outputs.json"
    assert json.loads(path.read_text()) == {"model": "demo", "version": 3}
    assert [p.name for p in path.parent.iterdir()] == ["outputs.json"]  # no temp file left


def test_outputs_json_is_json_whatever_numbers_the_job_holds(tmp_path: Path) -> None:
    # Python's json.dumps writes a diverged loss as NaN (and infinities as Infinity), which no JSON
    # reader but Python's takes. They are written as the text the control plane keeps them as
    # ("NaN"), and so is an integer no double holds; the warning names where they were.
    ctx = TrainingContext.from_env(launch(tmp_path).to_env())
    huge = 10**400
    outputs = {
        "model": "demo",
        "loss": float("nan"),
        "metrics": {"best": [float("inf"), -float("inf"), 0.5], "n": huge, "ok": 2},
        "pair": (1.5, float("nan")),
    }
    with pytest.warns(
        UserWarning, match=r"loss, metrics\.best\[0\], metrics\.best\[1\], metrics\.n, pair\[1\]"
    ):
        path = ctx.write_outputs(outputs)
    text = path.read_text()
    strict = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert strict == {
        "model": "demo",
        "loss": "NaN",
        "metrics": {"best": ["Infinity", "-Infinity", 0.5], "n": str(huge), "ok": 2},
        "pair": [1.5, "NaN"],
    }
    assert outputs["loss"] != outputs["loss"]  # the caller's mapping is left as it was


def test_outputs_json_takes_numpy_and_torch_values(tmp_path: Path) -> None:
    """A training loop holds numpy scalars (``np.mean(losses)`` is an np.float64 but ``loss.mean()`` of a
    float32 array an np.float32), numpy arrays and torch tensors: ``json.dumps`` raised TypeError on each
    but np.float64 (a float subclass), so the job's last line failed and its outputs were lost. They are
    written as plain JSON numbers, booleans and lists, a non-finite one as its text as for Python floats;
    numpy integer keys (``np.unique`` labels) become the keys JSON has."""
    ctx = TrainingContext.from_env(launch(tmp_path).to_env())
    outputs = {
        "loss": np.float32(0.25),
        "steps": np.int64(2**40),
        "small": np.uint8(7),
        "converged": np.bool_(True),
        "diverged": np.float32("nan"),
        "per_class": {np.int64(3): np.float16(0.5), np.int32(-1): np.float64("inf")},
        "weights": np.array([[1.5, np.inf], [0.0, -2.0]], dtype=np.float32),
        "zero_d": np.array(4),
        "tensor": torch.tensor([0.5, float("nan")]),
        "tensor_0d": torch.tensor(2.5, requires_grad=True) * 2,
        "bf16": torch.tensor([1.0, 3.0], dtype=torch.bfloat16),
        "flags": torch.tensor([True, False]),
    }
    with pytest.warns(UserWarning, match=r"at diverged, per_class\.-1, weights\[0\]\[1\], tensor\[1\]$"):
        path = ctx.write_outputs(outputs)
    strict = json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert strict == {
        "loss": 0.25,
        "steps": 2**40,
        "small": 7,
        "converged": True,
        "diverged": "NaN",
        "per_class": {"3": 0.5, "-1": "Infinity"},
        "weights": [[1.5, "Infinity"], [0.0, -2.0]],
        "zero_d": 4,
        "tensor": [0.5, "NaN"],
        "tensor_0d": 5.0,
        "bf16": [1.0, 3.0],
        "flags": [True, False],
    }
    assert type(strict["steps"]) is int and type(strict["converged"]) is bool


def test_outputs_json_refuses_what_is_no_json_naming_where(tmp_path: Path) -> None:
    """What JSON has no value for (a complex number, an object) is refused naming where it was, before
    anything is written; json.dumps named neither the key nor the place."""
    ctx = TrainingContext.from_env(launch(tmp_path).to_env())
    for bad, shown in [
        ({"eig": np.array([1 + 2j])}, r"eig\[0\]: \(1\+2j\)"),
        ({"m": {"c": np.complex64(1j)}}, r"m\.c: 1j"),
        ({"t": torch.tensor(1 + 1j)}, r"t: \(1\+1j\)"),
        ({"o": object()}, r"o: <object object"),
    ]:
        with pytest.raises(TypeError, match=f"outputs.json: {shown}.* is not a JSON value"):
            ctx.write_outputs(bad)
    assert not (tmp_path / "job" / "outputs.json").exists()


def test_a_metric_that_is_not_one_number_is_refused_naming_it(tmp_path: Path) -> None:
    """``ctx.log_metrics(epoch, loss=losses)`` with the batch's loss tensor instead of its mean: refused at
    the call, naming the metric and its shape, before anything is kept for the checkpoints."""
    ctx = TrainingContext.from_env(launch(tmp_path).to_env())
    with pytest.raises(InvalidArgument, match=r"metric 'loss': a Tensor of shape \(4,\) holds 4 values"):
        ctx.log_metrics(0, loss=torch.ones(4), acc=np.float32(0.5))
    with pytest.raises(InvalidArgument, match=r"metric 'val/acc': value \(1\+0j\) is complex"):
        ctx.log_metrics(0, {"val/acc": np.complex64(1)})
    assert ctx._epoch_metrics == {} and ctx._metrics is None


def test_only_rank_0_logs_checkpoints_and_writes_outputs(tmp_path: Path) -> None:
    # Under torchrun (a job with gpus > 1) every rank runs the job's code with its own RANK; before, each
    # logged every metric point, wrote the same checkpoint files and outputs.json at once.
    environ = launch(tmp_path).to_env()
    other = TrainingContext.from_env({**environ, "RANK": "1"})
    assert not other.is_primary and other.launch.rank == 1
    other.log_metrics(0, loss=1.0)
    other.log_batch_metrics(1, loss=1.0)
    assert other._metrics is None  # no tracking client made, nothing buffered to ship
    assert other.checkpoint(TrainingState(torch.nn.Linear(2, 1), epoch=1)) is None
    assert other.write_outputs({"model": "demo"}) == tmp_path / "job" / "outputs.json"
    assert not (tmp_path / "job" / "outputs.json").exists()
    assert not other.checkpoint_dir.exists() or not any(other.checkpoint_dir.iterdir())

    primary = TrainingContext.from_env({**environ, "RANK": "0"})
    assert primary.is_primary
    written = primary.checkpoint(TrainingState(torch.nn.Linear(2, 1), epoch=1))
    assert written is not None and written.parent == primary.checkpoint_dir
    resumed = other.resume()  # every rank resumes from rank 0's checkpoint
    assert resumed is not None and resumed.path == written
    assert other._metrics is None  # nor does resuming mend curves (send points) from another rank


def test_a_checkpoint_after_epoch_points_only_does_not_wait_on_the_control_plane(tmp_path: Path) -> None:
    # Epoch points are in the checkpoint (a resume sends those the run lacks), so only per-batch points
    # are sent before it. It waited for every checkpoint's round trip, most of the SDK's time per epoch,
    # and here (nothing listens) for the whole CHECKPOINT_FLUSH_S.
    ctx = TrainingContext(launch(tmp_path), TrainingContext.from_env(launch(tmp_path).to_env()).spec)
    ctx.log_metrics(0, loss=1.5)
    started = time.monotonic()
    assert ctx.checkpoint(TrainingState(torch.nn.Linear(2, 1), epoch=1)) is not None
    assert time.monotonic() - started < CHECKPOINT_FLUSH_S / 2
    checkpoint = ctx.checkpoints.resume()
    assert checkpoint is not None and checkpoint.sdk["epoch_metrics"] == {0: {"loss": 1.5}}
    ctx.metrics.client.close_timeout_s = 0.1  # what it buffered has nowhere to go
    ctx.metrics.close()


def test_batch_points_a_checkpoint_timed_out_on_are_waited_for_by_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkpoint waits (bounded) for the per-batch points logged before it: a resume from it does not
    # replay their steps. When that wait timed out, the next checkpoint did not wait for them at all
    # unless a batch was logged in between, so a crash after it lost them though the control plane was
    # back by then.
    ctx = TrainingContext(launch(tmp_path), TrainingContext.from_env(launch(tmp_path).to_env()).spec)
    ctx.log_batch_metrics(1, loss=1.5)
    waits: list[float | None] = []
    answers = iter([False, True])  # unreachable at the first checkpoint, back at the second

    def flush(timeout: float | None = None) -> bool:
        waits.append(timeout)
        return next(answers)

    monkeypatch.setattr(ctx.metrics, "flush", flush)
    state = TrainingState(torch.nn.Linear(2, 1), epoch=1)
    ctx.checkpoint(state)
    ctx.checkpoint(state)  # no batch logged in between
    ctx.checkpoint(state)  # sent: nothing to wait for
    assert waits == [CHECKPOINT_FLUSH_S, CHECKPOINT_FLUSH_S]
    ctx.metrics.client.close_timeout_s = 0.1  # what it buffered has nowhere to go
    ctx.metrics.close()

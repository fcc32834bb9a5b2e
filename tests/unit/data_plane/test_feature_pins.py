"""Pins of references without a view version, shared by the workers of one data plane
(``data_plane.feature_pins``): the first to serve a model version chooses, every other reads its choice,
also when they all ask at once from processes of their own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from clients.errors import NotFound
from data_plane.catalog import Catalog
from data_plane.feature_pins import FeaturePins, SharedPins, open_shared_pins
from data_plane.models.spec import ModelSpec, TensorSpec
from tests.unit.data_plane.registry_builders import floats, snapshot, view


def _model(refs: tuple[str, ...], version: int = 1) -> ModelSpec:
    return ModelSpec(
        name="m",
        version=version,
        artifact_sha256="",
        artifact_uri="",
        inputs=(TensorSpec("input", "float32", (-1, 4)),),
        outputs=(TensorSpec("output", "float32", (-1, 1)),),
        feature_refs=refs,
    )


def test_a_worker_reads_the_pins_another_chose_even_with_a_newer_catalog(
    caplog: pytest.LogCaptureFixture,
) -> None:
    old = Catalog(snapshot(view("stats", floats(2)), revision=1))
    new = Catalog(snapshot(view("stats", floats(2)), view("stats", floats(2), version=2), revision=2))
    descriptor = open_shared_pins()
    try:
        first = FeaturePins(lambda: old, SharedPins(descriptor))
        second = FeaturePins(lambda: new, SharedPins(descriptor))
        spec = _model(("stats", "stats@2:f1", "stats:f0"))
        assert first.pinned(spec, spec.feature_refs) == ("stats@1", "stats@2:f1", "stats@1:f0")
        assert second.pinned(spec, spec.feature_refs) == ("stats@1", "stats@2:f1", "stats@1:f0")
        # Another model version is its own choice: the second worker makes it, with its catalog.
        other = _model(("stats",), version=2)
        assert second.pinned(other, other.feature_refs) == ("stats@2",)
        assert first.pinned(other, other.feature_refs) == ("stats@2",)
    finally:
        os.close(descriptor)
    said = [r.getMessage() for r in caplog.records]
    assert "pinned to the newest servable versions (registry revision 1)" in said[0]
    assert "pinned as another worker of this data plane pinned them" in said[1]
    assert "'stats' -> 'stats@1', 'stats:f0' -> 'stats@1:f0'" in said[1]
    assert "write the version into the model config's feature_refs ('stats@1') to keep it" in said[1]


def test_a_view_not_served_yet_pins_nothing() -> None:
    empty = Catalog(snapshot(revision=1))
    served = Catalog(snapshot(view("stats", floats(2), version=3), revision=2))
    descriptor = open_shared_pins()
    try:
        spec = _model(("stats",))
        with pytest.raises(NotFound):
            FeaturePins(lambda: empty, SharedPins(descriptor)).pinned(spec, spec.feature_refs)
        assert FeaturePins(lambda: served, SharedPins(descriptor)).pinned(spec, spec.feature_refs) == (
            "stats@3",
        )
    finally:
        os.close(descriptor)


_AGREE = textwrap.dedent(
    """
    import sys, time
    from data_plane.feature_pins import SharedPins

    def choose():
        time.sleep(0.05)  # long enough for every other process to come asking meanwhile
        return (f"stats@{sys.argv[2]}",)

    sys.stdin.readline()  # all start asking at once
    pinned, chose = SharedPins(int(sys.argv[1])).agree((("m", 1), ("stats",)), choose)
    print(pinned[0], chose)
    """
)


def test_workers_asking_at_once_agree_on_one_choice() -> None:
    descriptor = open_shared_pins()
    try:
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", _AGREE, str(descriptor), str(n)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                pass_fds=(descriptor,),
            )
            for n in range(1, 7)
        ]
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        answers = [process.communicate(timeout=60)[0].split() for process in processes]
    finally:
        os.close(descriptor)
    assert all(process.returncode == 0 for process in processes)
    assert len({pinned for pinned, _ in answers}) == 1, answers
    assert [chose for _, chose in answers].count("True") == 1, answers

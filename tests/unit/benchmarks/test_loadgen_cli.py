"""The load generator's command line: a target that cannot be reached, or a level that measures nothing,
is one line and exit 2 (it was a traceback, and ``-c 0`` printed NaN, which is not JSON)."""

from __future__ import annotations

import pytest

from benchmarks.loadgen.__main__ import main
from tests.support.ports import refused_address


def test_an_unreachable_target_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    target = refused_address()  # nothing listens there
    assert main(["--target", target, "-c", "1", "-d", "0.2", "--warmup", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {target}: UNAVAILABLE: ") and "\n" not in err


@pytest.mark.parametrize("levels", ["0", "1,0", "eight"])
def test_a_level_below_one_or_not_a_number_is_refused(
    levels: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--target", "127.0.0.1:1", "-c", levels])
    assert exit_.value.code == 2
    assert "-c/--concurrency" in capsys.readouterr().err


@pytest.mark.parametrize("flag", [["--width", "-1"], ["--entities", "0"]])
def test_a_width_or_entity_count_below_one_is_refused(
    flag: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--target", "127.0.0.1:1", *flag])
    assert exit_.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err

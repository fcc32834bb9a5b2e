"""``aetherctl quarantine list --view`` against a real control plane: the VIEW column's own form
(``stats@1``) selects that version, and a name nobody knows is NOT_FOUND instead of an empty table; and
``quarantine discard`` asks before it gives records up, as every destructive command does."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from clients.sdk.ingestion import IngestionClient
from tests.integration.cli.in_process import DRIVER_STATS, Capture, aetherctl
from tests.support.terminal import aetherctl_at_a_terminal


def rows(trips: list[int]) -> pa.Table:
    return pa.table(
        {
            "driver_id": pa.array(range(1, len(trips) + 1), pa.int64()),
            "event_ts": pa.array([datetime(2024, 1, 1, 12, tzinfo=UTC)] * len(trips)),
            "trips": pa.array(trips, pa.int64()),
        }
    )


@pytest.fixture
def quarantined(control_plane: str, tmp_path: Path, capsys: Capture) -> str:
    """``stats`` at versions 1 and 2 (a changed source makes a version), one record quarantined in each
    (trips below 0); and ``gone``, deleted since one of its records was quarantined."""
    definitions = tmp_path / "features.yaml"
    for uri, views in [("nowhere", ["stats"]), ("elsewhere", ["stats", "gone"])]:
        text = DRIVER_STATS.replace("nowhere", uri)
        if "gone" in views:
            text += text.split("feature_views:\n")[1].replace("name: stats", "name: gone")
        definitions.write_text(text)
        assert aetherctl(capsys, control_plane, "features", "apply", str(definitions))[0] == 0
    with IngestionClient(control_plane) as client:
        for view, version in [("stats", 1), ("stats", 2), ("gone", 1)]:
            assert client.ingest(view, rows([3, -1]), version=version).quarantined == 1
    assert aetherctl(capsys, control_plane, "features", "delete", "gone", "--yes")[0] == 0
    return control_plane


def listed_views(out: str) -> list[str]:
    return [line.split()[1] for line in out.splitlines()[1:]]


def test_view_at_version_lists_that_version_as_the_view_column_shows_it(
    quarantined: str, capsys: Capture
) -> None:
    code, out, _ = aetherctl(capsys, quarantined, "quarantine", "list", "--view", "stats")
    assert (code, sorted(listed_views(out))) == (0, ["stats@1", "stats@2"])
    for shown in ("stats@1", "stats@2"):
        code, out, err = aetherctl(capsys, quarantined, "quarantine", "list", "--view", shown)
        assert (code, listed_views(out)) == (0, [shown]), err


@pytest.mark.parametrize("view", ["stat", "stats@3", "sta ts"])
def test_a_view_neither_registered_nor_quarantined_is_not_found(
    quarantined: str, capsys: Capture, view: str
) -> None:
    code, out, err = aetherctl(capsys, quarantined, "quarantine", "list", "--view", view)
    assert (code, out) == (1, "")
    assert err == f"error: NOT_FOUND: feature view {view!r} not found, and no quarantined record names it\n"


def test_a_known_view_without_records_in_that_status_is_an_empty_listing(
    quarantined: str, capsys: Capture
) -> None:
    code, out, err = aetherctl(
        capsys, quarantined, "quarantine", "list", "--view", "stats@1", "--status", "replayed"
    )
    assert (code, listed_views(out), err) == (0, [], "")
    # A deleted view's records stay listed: its name is known by them.
    code, out, err = aetherctl(capsys, quarantined, "quarantine", "list", "--view", "gone", "--status", "all")
    assert code == 0 and listed_views(out) == ["gone@1"], err
    code, out, err = aetherctl(
        capsys, quarantined, "quarantine", "list", "--view", "gone", "--status", "replayed"
    )
    assert (code, listed_views(out), err) == (0, [], "")


def test_discard_without_yes_and_no_terminal_is_refused_and_discards_nothing(
    quarantined: str, capsys: Capture
) -> None:
    """discard gave records up at once, from a script as from a person, where ``features delete`` asks
    (or, with no terminal to ask on, wants ``--yes``)."""
    with IngestionClient(quarantined) as client:
        [record] = client.list_quarantined(view="stats@1")
        code, out, err = aetherctl(capsys, quarantined, "quarantine", "discard", str(record.id))
        assert (code, out) == (2, "")
        assert "refusing to discard quarantined record" in err and "pass --yes" in err, err
        assert client.get_quarantined(record.id).status == "quarantined"

        code, out, err = aetherctl(capsys, quarantined, "quarantine", "discard", str(record.id), "--yes")
        assert (code, out, err) == (0, "discarded: 1\n", "")
        assert client.get_quarantined(record.id).status == "discarded"


def test_discard_asks_at_a_terminal(quarantined: str, tmp_path: Path) -> None:
    with IngestionClient(quarantined) as client:
        [record] = client.list_quarantined(view="stats@2")
        argv = ("quarantine", "discard", str(record.id), "--json")
        declined = aetherctl_at_a_terminal(quarantined, *argv, typed="no\n", home=tmp_path)
        assert (declined.code, declined.out) == (1, "")
        assert declined.err.startswith(f"Discard quarantined record {record.id} for good? [y/N] ")
        assert client.get_quarantined(record.id).status == "quarantined"

        accepted = aetherctl_at_a_terminal(quarantined, *argv, typed="y\n", home=tmp_path)
        assert (accepted.code, accepted.out) == (0, '{\n  "discarded": 1\n}\n'), accepted.err
        assert client.get_quarantined(record.id).status == "discarded"

"""Progress lines: one per stage, and a plain text bar for the long ones (no extra dependency)."""

from __future__ import annotations

from collections.abc import Callable

Say = Callable[[str], None]


class Bar:
    """Prints ``label [#####.....] done/total`` at each tenth of the way (one line each, so the output
    reads the same in a terminal, a CI log and a test's captured stdout)."""

    def __init__(self, say: Say, label: str, total: int, width: int = 20) -> None:
        self._say, self._label, self._total, self._width = say, label, max(total, 1), width
        self._shown = -1

    def update(self, done: int) -> None:
        tenth = done * 10 // self._total
        if tenth == self._shown:
            return
        self._shown = tenth
        filled = self._width * done // self._total
        self._say(f"      {self._label} [{'#' * filled}{'.' * (self._width - filled)}] {done}/{self._total}")

"""Feature references as users write them: ``view:feature``, ``view@2:feature``, ``view``, ``view@2``.
The one grammar both planes and the SDK share.

Names are taken as written (any text without ``:``, ``@`` or whitespace) so that whatever names the
registry accepts can be referenced; whether a name exists is the catalog's question (NOT_FOUND), not the
grammar's (INVALID_ARGUMENT).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from clients.errors import InvalidArgument

_NAME = r"[^\s:@]+"
_REF = re.compile(rf"(?P<view>{_NAME})(?:@(?P<version>[0-9]+))?(?::(?P<feature>{_NAME}))?")
_MAX_VERSION = 2**32 - 1  # versions are uint32 on the wire
_MAX_VERSION_DIGITS = len(str(_MAX_VERSION))


@dataclass(frozen=True, slots=True)
class FeatureRef:
    view: str
    version: int | None  # None = the latest version that is not retired
    feature: str | None  # None = every feature of the view, in registered order

    def __str__(self) -> str:
        text = self.view if self.version is None else f"{self.view}@{self.version}"
        return text if self.feature is None else f"{text}:{self.feature}"


def parse_ref(text: str) -> FeatureRef:
    match = _REF.fullmatch(text)
    if match is None:
        raise InvalidArgument(
            f"malformed feature reference {text!r}: expected 'view:feature', 'view@VERSION:feature', "
            "'view' or 'view@VERSION'"
        )
    version_text = match["version"]
    version = None if version_text is None else _version(version_text, text)
    return FeatureRef(match["view"], version, match["feature"])


def _version(digits: str, text: str) -> int:
    """The version of ``@digits``. Its significant digits are counted before int(), which raises
    ValueError past 4,300 digits (INTERNAL where INVALID_ARGUMENT is due)."""
    significant = digits.lstrip("0")
    if not significant:
        raise InvalidArgument(f"malformed feature reference {text!r}: versions start at 1")
    if len(significant) > _MAX_VERSION_DIGITS or int(significant) > _MAX_VERSION:
        raise InvalidArgument(
            f"malformed feature reference {text!r}: the version must be between 1 and {_MAX_VERSION}"
        )
    return int(significant)

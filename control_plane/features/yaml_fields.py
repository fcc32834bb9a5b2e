"""Reading a YAML file field by field with each field's line: the machinery under the declarative feature
definitions (:mod:`control_plane.features.definitions`), which declares the keys and what reads them.

A :class:`FieldParser` reads mappings against a table of :class:`Key` (unknown, duplicate and missing keys
and invalid values are all recorded as problems, so one run reports everything wrong in the file), and
remembers, for each path of the request it builds, the line and YAML field it came from
(:class:`Location`). A reader (:data:`Reader`) turns one node into a value or raises :class:`Invalid`
after recording the problem.
"""

from __future__ import annotations

import contextlib
import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import SafeConstructor


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    field: str  # YAML path, e.g. feature_views[0].features[2].dtype; empty for a syntax error
    message: str

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{self.file}:{self.line}: {where}{self.message}"


class DefinitionError(Exception):
    """The definitions file is invalid; ``problems`` lists every problem found, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: p.line)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class Location:
    line: int
    field: str  # the YAML path the request path came from


class Invalid(Exception):
    """One field is wrong; it is recorded as a problem, and parsing goes on with the next field."""


# A reader turns one YAML node (at a YAML path, for a request path) into a value, or raises Invalid.
Reader = Callable[["FieldParser", yaml.Node, str, str], Any]


@dataclass(frozen=True)
class Key:
    read: Reader
    to: str  # the field's path in the request, relative to the record's
    required: bool = False


class FieldParser:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self.locations: dict[str, Location] = {}
        self._constructor = SafeConstructor()

    def fail(self, node: yaml.Node, path: str, message: str) -> Invalid:
        self.problems.append(Problem(self.file, node.start_mark.line + 1, path, message))
        return Invalid(message)

    def record(self, node: yaml.Node, path: str, at: str, keys: dict[str, Key]) -> dict[str, Any]:
        """The values of a mapping's valid keys. Unknown, duplicate and missing keys and invalid values
        are all recorded as problems, so that one run reports everything wrong in the file."""
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, path, f"expected a mapping, got {kind_of(node)}")
        self.locations[at] = Location(node.start_mark.line + 1, path)
        values: dict[str, Any] = {}
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            key_path = f"{path}.{key}" if path else key
            if key not in keys:
                hint = difflib.get_close_matches(key, keys, n=1)
                guess = f"did you mean {hint[0]!r}? " if hint else ""
                self.fail(
                    key_node, key_path, f"unknown key {key!r}; {guess}expected one of {', '.join(keys)}"
                )
                continue
            if key in seen:
                self.fail(key_node, key_path, f"duplicate key {key!r}")
                continue
            seen.add(key)
            key_at = f"{at}.{keys[key].to}" if at else keys[key].to
            self.locations[key_at] = Location(value_node.start_mark.line + 1, key_path)
            with contextlib.suppress(Invalid):
                values[key] = keys[key].read(self, value_node, key_path, key_at)
        for key, spec in keys.items():
            if spec.required and key not in seen:
                self.fail(node, path, f"missing required key {key!r}")
        return values

    def records(
        self, node: yaml.Node, path: str, at: str, keys: dict[str, Key], what: str
    ) -> list[tuple[yaml.Node, dict[str, Any]]]:
        """Each item of a list of records with its values; a duplicate ``name`` is a problem."""
        result: list[tuple[yaml.Node, dict[str, Any]]] = []
        first_line: dict[str, int] = {}
        for index, item in enumerate(read_sequence(self, node, path, at)):
            try:
                values = self.record(item, f"{path}[{index}]", f"{at}[{index}]", keys)
            except Invalid:
                continue
            name = values.get("name")
            if name is not None and name in first_line:
                message = f"duplicate {what} {name!r} (first defined on line {first_line[name]})"
                self.fail(item, f"{path}[{index}].name", message)
            elif name is not None:
                first_line[name] = item.start_mark.line + 1
            result.append((item, values))
        return result

    def scalar(self, node: yaml.Node, path: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, path, f"expected a single value, got {kind_of(node)}")
        try:
            return self._constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, AttributeError, OverflowError) as error:
            # An explicit tag the value does not fit (`!!int abc`, `!!timestamp x`) or one no reader
            # knows (`!foo`): the file's problem, reported at its line like any other.
            problem = getattr(error, "problem", None) or str(error)
            raise self.fail(node, path, f"cannot read {node.value!r} as {node.tag}: {problem}") from None


def read_string(parser: FieldParser, node: yaml.Node, path: str, at: str) -> str:
    value = parser.scalar(node, path)
    if not isinstance(value, str):
        raise parser.fail(node, path, f"expected a string, got {kind_of(node)} {node.value!r}")
    return value


def read_number(parser: FieldParser, node: yaml.Node, path: str, at: str) -> float:
    value = parser.scalar(node, path)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:  # NaN != NaN
        raise parser.fail(node, path, f"expected a number, got {kind_of(node)} {node.value!r}")
    if isinstance(value, float):
        return value
    # The request holds these numbers as doubles (ValidationRule's bounds). An integer a double cannot
    # hold exactly (beyond 2**53) was rounded without a word, so an int64 feature was checked against
    # another bound than the one written (9007199254740993 became ...992), and one beyond a double's
    # range ended `features apply` in an OverflowError traceback.
    try:
        number = float(value)
    except OverflowError:
        digits = str(abs(value))
        shown = f"{'-' if value < 0 else ''}{digits[:6]}... ({len(digits)} digits)"
        raise parser.fail(node, path, f"{shown} is beyond the range of a double (about 1.8e308)") from None
    if number != value:  # Python compares an int with a float exactly
        beyond = math.nextafter(number, math.inf if value > number else -math.inf)
        low, high = sorted((int(number), int(beyond)))
        raise parser.fail(
            node, path,
            f"{value} is not exactly representable as a double, which a bound is (the nearest are {low}"
            f" and {high}); write one of those",
        )  # fmt: skip
    return number


def read_choice(choices: tuple[str, ...], what: str) -> Reader:
    def read(parser: FieldParser, node: yaml.Node, path: str, at: str) -> str:
        value = read_string(parser, node, path, at).lower()
        if value not in choices:
            raise parser.fail(
                node, path, f"unknown {what} {node.value!r}; expected one of {', '.join(choices)}"
            )
        return value

    return read


def read_sequence(parser: FieldParser, node: yaml.Node, path: str, at: str) -> list[yaml.Node]:
    if not isinstance(node, yaml.SequenceNode):
        raise parser.fail(node, path, f"expected a list, got {kind_of(node)}")
    return list(node.value)


def kind_of(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    tag = str(node.tag).rsplit(":", 1)[-1]
    names = {"int": "an integer", "float": "a number", "str": "a string", "bool": "a boolean", "null": "null"}
    return names.get(tag, tag)

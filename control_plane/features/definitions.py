"""Declarative feature definitions: a YAML file in, an ``ApplyRequest`` out.

The file is checked completely on this side before anything is sent, and every problem names the file,
the line and the field (``features.yaml:14: feature_views[0].features[2].dtype: unknown type ...``).
YAML is read with ``yaml.compose`` rather than ``safe_load`` because only the node tree keeps line
numbers. The parse also records, for every path of the request (``views[1].spec.features[3]``), the
line and the YAML field it came from, so that an error the server reports against the request can be
pointed back at the file.

Format (see ``examples/features.yaml``)::

    entities:
      - name: zone
        join_keys: [{name: zone_id, type: int64}]
    feature_views:
      - name: zone_weather
        entity: zone
        ttl: 2h
        source: {kind: batch, uri: data/weather.parquet, timestamp_field: event_ts}
        features:
          - {name: temperature_c, dtype: float32, validation: {min: -50, max: 60}}
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from clients.int64 import INT64_MAX, INT64_MIN
from clients.value_types import TYPE_NAMES
from control_plane.features.durations import MAX_DURATION_S, parse_duration
from control_plane.features.validation import AGGREGATION_FUNCTIONS, NAME_PATTERN, SOURCE_KINDS
from control_plane.features.yaml_fields import (
    DefinitionError,
    FieldParser,
    Invalid,
    Key,
    Location,
    Problem,
    kind_of,
    read_choice,
    read_number,
    read_sequence,
    read_string,
)

__all__ = [
    "FEATURE_TYPES",
    "JOIN_KEY_TYPES",
    "MAX_DURATION_S",
    "DefinitionError",
    "Definitions",
    "Location",
    "Problem",
    "load_definitions",
    "parse_definitions",
    "parse_duration",
]

FEATURE_TYPES = tuple(name for name in TYPE_NAMES if name != "string")
JOIN_KEY_TYPES = ("int64", "string")
_CATEGORICAL = {types_pb2.INT32, types_pb2.INT64, types_pb2.BOOL}


@dataclass(frozen=True)
class Definitions:
    file: str
    request: pb.ApplyRequest
    locations: dict[str, Location] = field(default_factory=dict)  # request path -> where in the file

    def locate(self, request_path: str) -> Location | None:
        """Where ``request_path`` came from; a path below the deepest one recorded (a map key, say)
        is located at its closest recorded ancestor, with the rest of the path kept on the field."""
        prefix = request_path
        while prefix:
            if prefix in self.locations:
                found = self.locations[prefix]
                return Location(found.line, found.field + request_path[len(prefix) :])
            cut = max(prefix.rfind("."), prefix.rfind("["))
            prefix = prefix[:cut] if cut > 0 else ""
        return None

    def explain(self, server_message: str) -> str | None:
        """``FILE:LINE: field: message`` for a server message that starts with a request path
        (``views[1].spec.entity: unknown entity 'zon'``); None when it names no path of this request."""
        match = re.match(r"((?:entities|views)\[\d+\][\w.\[\]]*): (.*)", server_message, re.DOTALL)
        if match is None:
            return None
        location = self.locate(match.group(1))
        if location is None:
            return None
        return str(Problem(self.file, location.line, location.field, match.group(2)))


def load_definitions(path: str | Path) -> Definitions:
    """Parses the definitions file at ``path``; DefinitionError when it is invalid or unreadable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DefinitionError([Problem(str(path), 0, "", f"cannot read file: {error}")]) from None
    return parse_definitions(text, str(path))


def parse_definitions(text: str, file: str = "<string>") -> Definitions:
    """Parses definitions from ``text`` (``file`` names it in errors); DefinitionError when invalid."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = error.problem or error.context or "syntax error"
        raise DefinitionError([Problem(file, line, "", f"invalid YAML: {problem}")]) from None
    except yaml.YAMLError as error:
        raise DefinitionError([Problem(file, 1, "", f"invalid YAML: {error}")]) from None
    parser = FieldParser(file)
    request = _parse(parser, root)
    if parser.problems:
        raise DefinitionError(parser.problems)
    return Definitions(file, request, parser.locations)


def _parse(parser: FieldParser, root: yaml.Node | None) -> pb.ApplyRequest:
    request = pb.ApplyRequest()
    if root is None:
        message = "the file defines nothing; expected entities and/or feature_views"
        parser.problems.append(Problem(parser.file, 1, "", message))
        return request
    try:
        top = parser.record(root, "", "", _TOP_KEYS)
    except Invalid:
        return request
    request.entities.extend(top.get("entities", []))
    request.views.extend(top.get("feature_views", []))
    return request


# Readers of single values ----------------------------------------------------------------------------


def _name(parser: FieldParser, node: yaml.Node, path: str, at: str) -> str:
    value = read_string(parser, node, path, at)
    if not NAME_PATTERN.fullmatch(value):  # the registry's own rule, checked here to name the line
        raise parser.fail(node, path, f"invalid name {value!r}; use lower-case letters, digits and _")
    return value


def _duration(parser: FieldParser, node: yaml.Node, path: str, at: str) -> int:
    value = parser.scalar(node, path)
    try:
        if not isinstance(value, int | str):
            raise ValueError(f"expected a duration such as 90, 45s, 30m, 2h or 1d, got {node.value!r}")
        seconds = parse_duration(value)
    except ValueError as error:
        raise parser.fail(node, path, str(error)) from None
    if seconds > MAX_DURATION_S:
        longest = f"at most {MAX_DURATION_S // 86400}d"
        raise parser.fail(node, path, f"duration {node.value!r} is too long ({longest})")
    return seconds


def _tags(parser: FieldParser, node: yaml.Node, path: str, at: str) -> dict[str, str]:
    if not isinstance(node, yaml.MappingNode):
        raise parser.fail(node, path, f"expected a mapping of tag names to values, got {kind_of(node)}")
    tags: dict[str, str] = {}
    for key_node, value_node in node.value:
        key = read_string(parser, key_node, path, at)
        if key in tags:  # YAML keeps the last of equal keys: the first value was dropped without a word
            parser.fail(key_node, f"{path}.{key}", f"duplicate tag {key!r}")
            continue
        if not isinstance(value_node, yaml.ScalarNode) or value_node.tag.endswith(":null"):
            raise parser.fail(value_node, f"{path}.{key}", "a tag value must be a single value")
        tags[key] = str(value_node.value)  # as written: `tier: 1` is the tag "1"
    return tags


def _categories(parser: FieldParser, node: yaml.Node, path: str, at: str) -> list[int]:
    values = [
        parser.scalar(item, f"{path}[{i}]") for i, item in enumerate(read_sequence(parser, node, path, at))
    ]
    for index, value in enumerate(values):
        if not isinstance(value, int):  # bool is an int: true/false stand for 1/0
            raise parser.fail(
                node.value[index], f"{path}[{index}]", f"expected an integer category, got {value!r}"
            )
        if not INT64_MIN <= value <= INT64_MAX:
            raise parser.fail(
                node.value[index], f"{path}[{index}]", f"category {value} is outside the 64-bit integer range"
            )
    return [int(value) for value in values]


# Readers of records ----------------------------------------------------------------------------------


def _join_keys(parser: FieldParser, node: yaml.Node, path: str, at: str) -> list[pb.JoinKey]:
    keys = parser.records(node, path, at, _JOIN_KEY_KEYS, "join key")
    if not keys and isinstance(node, yaml.SequenceNode) and not node.value:
        raise parser.fail(node, path, "an entity needs at least one join key")
    return [pb.JoinKey(name=v.get("name", ""), value_type=v.get("type", "int64").upper()) for _, v in keys]


def _entities(parser: FieldParser, node: yaml.Node, path: str, at: str) -> list[pb.Entity]:
    return [
        pb.Entity(
            name=v.get("name", ""), description=v.get("description", ""), join_keys=v.get("join_keys", [])
        )
        for _, v in parser.records(node, path, at, _ENTITY_KEYS, "entity")
    ]


def _validation(parser: FieldParser, node: yaml.Node, path: str, at: str) -> pb.ValidationRule:
    values = parser.record(node, path, at, _VALIDATION_KEYS)
    low, high = values.get("min"), values.get("max")
    if low is not None and high is not None and low > high:
        raise parser.fail(node, f"{path}.max", f"max {high:g} is below min {low:g}")
    fraction = values.get("max_null_fraction", 0.0)
    if not 0.0 <= fraction <= 1.0:
        raise parser.fail(node, f"{path}.max_null_fraction", f"must be between 0 and 1, got {fraction:g}")
    return pb.ValidationRule(
        min_value=low, max_value=high, allowed_values=values.get("allowed", []), max_null_fraction=fraction
    )


def _features(parser: FieldParser, node: yaml.Node, path: str, at: str) -> list[pb.Feature]:
    features = []
    for index, (item, values) in enumerate(parser.records(node, path, at, _FEATURE_KEYS, "feature")):
        feature = pb.Feature(
            name=values.get("name", ""),
            value_type=values.get("dtype", "value_type_unspecified").upper(),
            description=values.get("description", ""),
            validation=values.get("validation"),
        )
        # Judged only against a dtype that parsed: a missing or unknown one has its own error already, and
        # this check blamed the allowed values for it.
        known = "dtype" in values
        if known and feature.validation.allowed_values and feature.value_type not in _CATEGORICAL:
            message = "allowed values apply to integer and bool features only"
            parser.fail(item, f"{path}[{index}].validation.allowed", message)
        features.append(feature)
    if isinstance(node, yaml.SequenceNode) and not node.value:
        raise parser.fail(node, path, "a feature view needs at least one feature")
    return features


def _aggregations(
    parser: FieldParser, node: yaml.Node, path: str, at: str
) -> list[tuple[yaml.Node, pb.Aggregation]]:
    result = []
    for index, (item, values) in enumerate(parser.records(node, path, at, _AGGREGATION_KEYS, "aggregation")):
        if values.get("window") == 0:
            parser.fail(item, f"{path}[{index}].window", "an aggregation window must be longer than 0s")
        aggregation = pb.Aggregation(
            column=values.get("column", ""),
            function=values.get("function", ""),
            window_seconds=values.get("window", 0),
            output=values.get("output", ""),
        )
        result.append((item, aggregation))
    return result


def _views(parser: FieldParser, node: yaml.Node, path: str, at: str) -> list[pb.FeatureView]:
    views = []
    for index, (item, values) in enumerate(parser.records(node, path, at, _VIEW_KEYS, "feature view")):
        for part in ("spec", "metadata"):  # both halves of a view come from the one YAML record
            parser.locations[f"{at}[{index}].{part}"] = Location(item.start_mark.line + 1, f"{path}[{index}]")
        view = pb.FeatureView(
            spec=pb.FeatureViewSpec(
                name=values.get("name", ""),
                entity=values.get("entity", ""),
                features=values.get("features", []),
                source=values.get("source"),
                ttl_seconds=values.get("ttl", 0),
            ),
            metadata=pb.FeatureViewMetadata(
                description=values.get("description", ""),
                owner=values.get("owner", ""),
                tags=values.get("tags"),
            ),
        )
        feature_names = {feature.name for feature in view.spec.features}
        outputs: set[str] = set()
        for agg_index, (item, aggregation) in enumerate(values.get("aggregations", [])):
            where = f"{path}[{index}].aggregations[{agg_index}].output"
            if aggregation.output in outputs:
                parser.fail(item, where, f"duplicate aggregation output {aggregation.output!r}")
            elif aggregation.output and aggregation.output not in feature_names:
                message = f"{aggregation.output!r} is not a feature of this view; declare it under features"
                parser.fail(item, where, message)
            outputs.add(aggregation.output)
            view.spec.aggregations.append(aggregation)
        views.append(view)
    return views


def _source(parser: FieldParser, node: yaml.Node, path: str, at: str) -> pb.Source:
    values = parser.record(node, path, at, _SOURCE_KEYS)
    return pb.Source(
        kind=values.get("kind", ""),
        uri=values.get("uri", ""),
        timestamp_field=values.get("timestamp_field", ""),
    )


# The format: each record's keys, what reads them and where they go in the request.

_JOIN_KEY_KEYS = {
    "name": Key(_name, "name", required=True),
    "type": Key(read_choice(JOIN_KEY_TYPES, "join key type"), "value_type", required=True),
}
_ENTITY_KEYS = {
    "name": Key(_name, "name", required=True),
    "description": Key(read_string, "description"),
    "join_keys": Key(_join_keys, "join_keys", required=True),
}
_VALIDATION_KEYS = {
    "min": Key(read_number, "min_value"),
    "max": Key(read_number, "max_value"),
    "allowed": Key(_categories, "allowed_values"),
    "max_null_fraction": Key(read_number, "max_null_fraction"),
}
_FEATURE_KEYS = {
    "name": Key(_name, "name", required=True),
    "dtype": Key(read_choice(FEATURE_TYPES, "type"), "value_type", required=True),
    "description": Key(read_string, "description"),
    "validation": Key(_validation, "validation"),
}
_SOURCE_KEYS = {
    "kind": Key(read_choice(SOURCE_KINDS, "source kind"), "kind", required=True),
    "uri": Key(read_string, "uri"),
    "timestamp_field": Key(read_string, "timestamp_field"),
}
_AGGREGATION_KEYS = {
    "column": Key(read_string, "column", required=True),
    "function": Key(read_choice(AGGREGATION_FUNCTIONS, "function"), "function", required=True),
    "window": Key(_duration, "window_seconds", required=True),
    "output": Key(_name, "output", required=True),
}
_VIEW_KEYS = {
    "name": Key(_name, "spec.name", required=True),
    "entity": Key(_name, "spec.entity", required=True),
    "description": Key(read_string, "metadata.description"),
    "owner": Key(read_string, "metadata.owner"),
    "tags": Key(_tags, "metadata.tags"),
    "ttl": Key(_duration, "spec.ttl_seconds"),
    "source": Key(_source, "spec.source"),
    "features": Key(_features, "spec.features", required=True),
    "aggregations": Key(_aggregations, "spec.aggregations"),
}
_TOP_KEYS = {"entities": Key(_entities, "entities"), "feature_views": Key(_views, "views")}

"""The run filter and sort-key language of ``CompareRuns``: a tokenizer and a recursive-descent parser
producing a small syntax tree. Every error is ``InvalidArgument`` naming the character position.

Grammar (keywords case-insensitive)::

    expr    := or_expr
    or_expr := and_expr ("or" and_expr)*
    and_expr:= not_expr ("and" not_expr)*
    not_expr:= "not" not_expr | "(" expr ")" | compare
    compare := field OP literal            OP: = == != <> < <= > >=
    field   := metrics.KEY | min(metrics.KEY) | max(metrics.KEY) | params.KEY | tags.KEY
             | attributes.(name | status | start_time | end_time)
    KEY     := [A-Za-z0-9_./-]+ | `any text but a backtick`
    literal := number | 'text' | "text"      (backslash escapes the quote and itself)
    sort    := field ["asc" | "desc"]

Metrics and times compare with numbers; parameters, tags, name and status with strings (status with a
run status, named in any case: :data:`RUN_STATUSES`). A filter is at
most :data:`MAX_FILTER_LENGTH` characters and nests ``not`` and parentheses at most :data:`MAX_DEPTH`
deep (the parser recurses once per level)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from clients.errors import InvalidArgument

FieldKind = Literal["metric", "param", "tag", "attribute"]
Aggregate = Literal["latest", "min", "max"]
Operator = Literal["=", "!=", "<", "<=", ">", ">="]

#: The longest filter or sort key text accepted.
MAX_FILTER_LENGTH = 10_000
#: How deep ``not`` and parentheses may nest: each level is a recursive call of the parser (and of the
#: SQL compiler after it), so a deeper filter ran out of Python's stack (RecursionError, INTERNAL).
MAX_DEPTH = 64

NUMERIC_ATTRIBUTES = frozenset({"start_time", "end_time"})
TEXT_ATTRIBUTES = frozenset({"name", "status"})
#: What ``attributes.status`` compares with: the run statuses, as stored (named in any case in a filter).
RUN_STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED")
_PREFIXES: dict[str, FieldKind] = {
    "metrics": "metric",
    "params": "param",
    "tags": "tag",
    "attributes": "attribute",
}
_OPERATORS: dict[str, Operator] = {
    "=": "=",
    "==": "=",
    "!=": "!=",
    "<>": "!=",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
}

_FIELD = re.compile(r"(metrics|params|tags|attributes)\.(?:`([^`]*)`|([A-Za-z0-9_./-]+))", re.IGNORECASE)
_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATOR = re.compile(r"==|!=|<>|<=|>=|=|<|>")


@dataclass(frozen=True)
class Field:
    kind: FieldKind
    key: str
    aggregate: Aggregate = "latest"

    @property
    def numeric(self) -> bool:
        return self.kind == "metric" or (self.kind == "attribute" and self.key in NUMERIC_ATTRIBUTES)

    def render(self) -> str:
        key = self.key if re.fullmatch(r"[A-Za-z0-9_./-]+", self.key) else f"`{self.key}`"
        text = f"{_prefix_of(self.kind)}.{key}"
        return text if self.aggregate == "latest" else f"{self.aggregate}({text})"


@dataclass(frozen=True)
class Compare:
    field: Field
    op: Operator
    value: float | str


@dataclass(frozen=True)
class And:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Not:
    item: Expr


Expr = Compare | And | Or | Not


@dataclass(frozen=True)
class SortKey:
    field: Field
    descending: bool = False


def _prefix_of(kind: FieldKind) -> str:
    return next(prefix for prefix, value in _PREFIXES.items() if value == kind)


@dataclass(frozen=True)
class _Token:
    kind: Literal["field", "number", "string", "word", "op", "(", ")", "end"]
    text: str
    position: int
    value: object = None


def _error(what: str, source: str, position: int, message: str) -> InvalidArgument:
    return InvalidArgument(f"bad {what} at position {position}: {message} (in {source!r})")


def _tokenize(source: str, what: str) -> list[_Token]:
    tokens: list[_Token] = []
    index = 0
    while index < len(source):
        char = source[index]
        if char.isspace():
            index += 1
            continue
        if char in "()":
            tokens.append(_Token(char, char, index))  # type: ignore[arg-type]
            index += 1
            continue
        if char in "'\"":
            text, end = _read_string(source, index, what)
            tokens.append(_Token("string", source[index:end], index, text))
            index = end
            continue
        if match := _FIELD.match(source, index):
            kind = _PREFIXES[match.group(1).lower()]
            key = match.group(2) if match.group(2) is not None else match.group(3)
            if not key:
                raise _error(what, source, index, "empty key")
            tokens.append(_Token("field", match.group(0), index, Field(kind, key)))
            index = match.end()
            continue
        if match := _NUMBER.match(source, index):
            number = float(match.group(0))
            if not math.isfinite(number):
                raise _error(what, source, index, f"number {match.group(0)} is out of range")
            tokens.append(_Token("number", match.group(0), index, number))
            index = match.end()
            continue
        if match := _WORD.match(source, index):
            tokens.append(_Token("word", match.group(0), index, match.group(0).lower()))
            index = match.end()
            continue
        if match := _OPERATOR.match(source, index):
            tokens.append(_Token("op", match.group(0), index, _OPERATORS[match.group(0)]))
            index = match.end()
            continue
        raise _error(what, source, index, f"unexpected character {char!r}")
    tokens.append(_Token("end", "", len(source)))
    return tokens


def _read_string(source: str, start: int, what: str) -> tuple[str, int]:
    quote, chars, index = source[start], [], start + 1
    while index < len(source):
        char = source[index]
        if char == "\\" and index + 1 < len(source):
            chars.append(source[index + 1])
            index += 2
            continue
        if char == quote:
            return "".join(chars), index + 1
        chars.append(char)
        index += 1
    raise _error(what, source, start, "unterminated string")


class _Parser:
    def __init__(self, source: str, what: str) -> None:
        if len(source) > MAX_FILTER_LENGTH:
            raise InvalidArgument(
                f"bad {what}: {len(source)} characters, at most {MAX_FILTER_LENGTH} (in {source[:80]!r}...)"
            )
        self.source = source
        self.what = what
        self.tokens = _tokenize(source, what)
        self.index = 0
        self.depth = 0

    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def error(self, message: str, token: _Token | None = None) -> InvalidArgument:
        return _error(self.what, self.source, (token or self.current).position, message)

    def at_word(self, *words: str) -> bool:
        return self.current.kind == "word" and self.current.value in words

    def expect(self, kind: str, description: str) -> _Token:
        if self.current.kind != kind:
            found = self.current.text or "end of input"
            raise self.error(f"expected {description}, found {found!r}")
        return self.advance()

    def finish(self) -> None:
        if self.current.kind != "end":
            raise self.error(f"unexpected {self.current.text!r}")

    def expression(self) -> Expr:
        items = [self.conjunction()]
        while self.at_word("or"):
            self.advance()
            items.append(self.conjunction())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def conjunction(self) -> Expr:
        items = [self.negation()]
        while self.at_word("and"):
            self.advance()
            items.append(self.negation())
        return items[0] if len(items) == 1 else And(tuple(items))

    def negation(self) -> Expr:
        if self.at_word("not"):
            self.enter()
            self.advance()
            negated = Not(self.negation())
            self.depth -= 1
            return negated
        if self.current.kind == "(":
            self.enter()
            self.advance()
            inner = self.expression()
            self.expect(")", "')'")
            self.depth -= 1
            return inner
        return self.comparison()

    def enter(self) -> None:
        """One more level of ``not`` or parentheses; refused past :data:`MAX_DEPTH`."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"'not' and parentheses nest more than {MAX_DEPTH} deep")

    def field(self) -> Field:
        token = self.current
        if self.at_word("min", "max"):
            aggregate: Aggregate = "min" if token.value == "min" else "max"
            self.advance()
            self.expect("(", f"'(' after {token.text}")
            inner_token = self.expect("field", "metrics.KEY")
            inner = inner_token.value
            assert isinstance(inner, Field)
            if inner.kind != "metric":
                raise self.error(f"{token.text}() applies to metrics only", inner_token)
            self.expect(")", "')'")
            return Field("metric", inner.key, aggregate)
        if token.kind != "field":
            found = token.text or "end of input"
            raise self.error(f"expected a field such as metrics.loss or params.lr, found {found!r}")
        self.advance()
        field = token.value
        assert isinstance(field, Field)
        if field.kind == "attribute" and field.key not in NUMERIC_ATTRIBUTES | TEXT_ATTRIBUTES:
            known = ", ".join(sorted(NUMERIC_ATTRIBUTES | TEXT_ATTRIBUTES))
            raise self.error(f"unknown attribute {field.key!r} (known: {known})", token)
        return field

    def status(self, name: str, literal: _Token) -> str:
        """A run status named in any case, as stored (capitals). Compared as written, 'finished' (or a
        misspelt status) matched no run without a word: a typo read as "no run has that status"."""
        stored = name.upper()
        if stored not in RUN_STATUSES:
            known = f"{', '.join(RUN_STATUSES[:-1])} or {RUN_STATUSES[-1]}"
            raise self.error(f"attributes.status is {known}, not {name!r}", literal)
        return stored

    def comparison(self) -> Compare:
        field_token = self.current
        field = self.field()
        op_token = self.expect("op", "a comparison operator (=, !=, <, <=, >, >=)")
        literal = self.current
        if literal.kind not in ("number", "string"):
            raise self.error(
                f"expected a number or a quoted string, found {literal.text or 'end of input'!r}"
            )
        self.advance()
        if field.numeric and literal.kind != "number":
            raise self.error(f"{field_token.text} is numeric: compare it with a number", literal)
        if not field.numeric and literal.kind != "string":
            raise self.error(f"{field_token.text} is text: compare it with a quoted string", literal)
        value = literal.value
        assert isinstance(value, (float, str))
        if field == Field("attribute", "status"):
            value = self.status(str(value), literal)
        op = op_token.value
        assert isinstance(op, str)
        return Compare(field, _OPERATORS[op], value)


def parse_filter(source: str) -> Expr | None:
    """The syntax tree of a filter; None for an empty (all-matching) filter."""
    if not source.strip():
        return None
    parser = _Parser(source, "filter")
    expression = parser.expression()
    parser.finish()
    return expression


def parse_sort_key(source: str) -> SortKey:
    """``field [asc|desc]``, e.g. ``metrics.loss desc`` or ``params.lr``."""
    parser = _Parser(source, "sort key")
    field = parser.field()
    descending = False
    if parser.at_word("asc", "desc"):
        descending = parser.advance().value == "desc"
    parser.finish()
    return SortKey(field, descending)


def parse_field(source: str) -> Field:
    parser = _Parser(source, "field")
    field = parser.field()
    parser.finish()
    return field


def render(expression: Expr) -> str:
    """Filter text that parses back to ``expression`` (used by tests and for messages)."""
    if isinstance(expression, Compare):
        if isinstance(expression.value, str):
            literal = '"' + expression.value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        else:
            literal = repr(expression.value)
        return f"{expression.field.render()} {expression.op} {literal}"
    if isinstance(expression, Not):
        return f"not ({render(expression.item)})"
    joiner = " and " if isinstance(expression, And) else " or "
    return joiner.join(f"({render(item)})" for item in expression.items)

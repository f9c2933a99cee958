"""One filter grammar, two syntaxes: CLI ``--where 'duration_s >= 60'`` strings and HTTP JSON
``{"duration_s": {"gte": 60}}``, parsed at each edge into the same :class:`Filter`.

A filter is an AND of conditions ``FIELD OP VALUE``. Fields: the catalog's
(:data:`pig.engine.index.catalog.FIELDS`: path, folder, name, extension, size, mtime,
duration_s, width, height, fps, codec, start_s, end_s) and ``meta.KEY`` (user metadata).
Operators: ``=`` ``!=`` ``<`` ``<=`` ``>`` ``>=``, ``~`` (glob: ``*``, ``?``, ``[abc]``; on
text) and ``in [a, b]``. A file field holds for every segment of the file.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from dataclasses import dataclass
from typing import Any, cast

from pig.engine.index.catalog import FIELDS, META_PREFIX
from pig.errors import PigError

# operator: (CLI spelling, JSON name, SQL)
OPERATORS: dict[str, tuple[str, str]] = {
    "=": ("eq", "="), "!=": ("ne", "!="), "<": ("lt", "<"), "<=": ("lte", "<="),
    ">": ("gt", ">"), ">=": ("gte", ">="), "~": ("glob", "GLOB"), "in": ("in", "IN"),
}
_BY_JSON = {name: op for op, (name, _) in OPERATORS.items()}
MAX_CONDITIONS = 32
MAX_IN_VALUES = 1000
_META_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")

Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class Condition:
    field: str
    op: str  # a key of OPERATORS
    value: Scalar | tuple[Scalar, ...]


@dataclass(frozen=True)
class Filter:
    """An AND of conditions (empty: everything)."""

    conditions: tuple[Condition, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.conditions)

    def sql(self) -> tuple[str, list[Any]]:
        """The SQL condition over the catalog (see :meth:`VideoIndex.matching`) and its
        parameters."""
        parts, params = [], []
        for c in self.conditions:
            expr = _expression(c.field)
            if c.op == "in":
                values = list(c.value)  # type: ignore[arg-type]
                parts.append(f"{expr} IN ({','.join('?' * len(values))})")
                params += [_sql_value(c.field, v) for v in values]
            else:
                parts.append(f"{expr} {OPERATORS[c.op][1]} ?")
                params.append(_sql_value(c.field, cast(Scalar, c.value)))  # parsed: a scalar
        return " AND ".join(parts) or "1", params

    def to_json(self) -> dict[str, dict[str, Any]]:
        """The HTTP form (what :func:`parse_json` reads back)."""
        out: dict[str, dict[str, Any]] = {}
        for c in self.conditions:
            value = list(c.value) if isinstance(c.value, tuple) else c.value
            out.setdefault(c.field, {})[OPERATORS[c.op][0]] = value
        return out


def _expression(field: str) -> str:
    if field.startswith(META_PREFIX):
        return f"json_extract(f.meta, '$.\"{field[len(META_PREFIX):]}\"')"
    return FIELDS[field][0]


def _sql_value(field: str, value: Scalar) -> Any:
    kind = "meta" if field.startswith(META_PREFIX) else FIELDS[field][1]
    if isinstance(value, bool):
        return int(value)
    if kind == "time" and isinstance(value, str):
        return _timestamp(field, value)
    return value


def _timestamp(field: str, text: str) -> float:
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise PigError(f"filter {field}: {text!r} is neither a number (unix seconds) nor an "
                       "ISO date (2026-05-01 or 2026-05-01T12:00:00)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def check_field(field: str) -> str:
    """``field`` if a filter may name it, else a one-line error naming it."""
    if field in FIELDS:
        return field
    if field.startswith(META_PREFIX) and _META_KEY.match(field[len(META_PREFIX):]):
        return field
    raise PigError(f"filter: unknown field {field!r} (fields: {', '.join(FIELDS)}, "
                   "meta.KEY)")


def _check(field: str, op: str, value: Any) -> Condition:
    check_field(field)
    kind = "meta" if field.startswith(META_PREFIX) else FIELDS[field][1]
    values = value if op == "in" else [value]
    if op == "in":
        if not isinstance(value, list | tuple) or not value:
            raise PigError(f"filter {field} in: needs a non-empty list of values")
        if len(value) > MAX_IN_VALUES:
            raise PigError(f"filter {field} in: at most {MAX_IN_VALUES} values")
    for v in values:
        if not isinstance(v, str | int | float | bool) or (isinstance(v, float)
                                                            and not math.isfinite(v)):
            raise PigError(f"filter {field} {op}: {json.dumps(v)} is not a string or a "
                           "finite number")
        if kind == "number" and not isinstance(v, int | float):
            raise PigError(f"filter {field} {op}: {field} is a number, got {json.dumps(v)}")
        if kind == "text" and op != "in" and op != "~" and not isinstance(v, str):
            raise PigError(f"filter {field} {op}: {field} is text, got {json.dumps(v)}")
        if kind == "time" and isinstance(v, str):
            _timestamp(field, v)
    if op == "~" and not isinstance(value, str):
        raise PigError(f"filter {field} ~: a glob pattern is text, got {json.dumps(value)}")
    return Condition(field, op, tuple(value) if op == "in" else value)


def _done(conditions: list[Condition]) -> Filter:
    if len(conditions) > MAX_CONDITIONS:
        raise PigError(f"filter: {len(conditions)} conditions, at most {MAX_CONDITIONS}")
    return Filter(tuple(conditions))


# --- CLI: --where 'FIELD OP VALUE' ---------------------------------------------------------
_WHERE = re.compile(r"^\s*(?P<field>[A-Za-z_][A-Za-z0-9_.-]*)\s*"
                    r"(?P<op>!=|<=|>=|=|<|>|~|\bin\b)\s*(?P<value>.*?)\s*$", re.S)


def _literal(text: str, field: str) -> Scalar:
    """A quoted string, a number, true/false, or else the bare text."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    kind = "meta" if field.startswith(META_PREFIX) else FIELDS.get(field, ("", "text"))[1]
    if kind != "text":
        try:
            number = float(text)
        except ValueError:
            return text
        return int(number) if number.is_integer() and "." not in text and "e" not in \
            text.lower() else number
    return text


def parse_where(expressions: list[str] | tuple[str, ...]) -> Filter:
    """``--where`` expressions (AND-ed), e.g. ``duration_s >= 60``, ``path ~ /cams/*``,
    ``meta.camera in [lobby, door]``, ``mtime >= 2026-05-01``."""
    conditions = []
    for text in expressions:
        m = _WHERE.match(text)
        if m is None or not m["value"]:
            raise PigError(f"--where {text!r}: expected FIELD OP VALUE with OP one of "
                           f"{' '.join(OPERATORS)} (e.g. 'duration_s >= 60')")
        field, op, raw = m["field"], m["op"], m["value"]
        check_field(field)
        if op == "in":
            if not (raw.startswith("[") and raw.endswith("]")):
                raise PigError(f"--where {text!r}: 'in' takes a list: in [a, b]")
            items = [i.strip() for i in raw[1:-1].split(",")]
            if any(not i for i in items):
                raise PigError(f"--where {text!r}: an empty item in the list")
            value: Any = [_literal(i, field) for i in items]
        else:
            value = _literal(raw, field)
        conditions.append(_check(field, op, value))
    return _done(conditions)


# --- HTTP: {"FIELD": {"OP": VALUE, ...}, ...} ----------------------------------------------
def parse_json(obj: Any) -> Filter:
    """The HTTP ``filter``: an object of fields, each an object of operators (``eq ne lt lte
    gt gte glob in``) or a bare value (``eq``)."""
    if obj is None:
        return Filter()
    if not isinstance(obj, dict):
        raise PigError("filter: must be an object of fields, e.g. "
                       '{"duration_s": {"gte": 60}}')
    conditions = []
    for field, ops in obj.items():
        check_field(field)
        if not isinstance(ops, dict):
            ops = {"eq": ops}
        if not ops:
            raise PigError(f"filter {field}: no operator")
        for name, value in ops.items():
            op = _BY_JSON.get(name)
            if op is None:
                raise PigError(f"filter {field}: unknown operator {name!r} (operators: "
                               f"{', '.join(_BY_JSON)})")
            conditions.append(_check(field, op, value))
    return _done(conditions)

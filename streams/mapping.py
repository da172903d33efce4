"""The dataflow mapping as data, and its pure logic.

This module owns:

* loading and validating ``schemas/mapping.json`` (the three flows of the
  "Customcrm to Businessnxt" dataflow, see ``dataflow-mapping.md``) into
  pydantic models (:class:`Mapping`, :class:`Flow`, :class:`Property`);
* the value converters named in that file (``string``, ``int``, ``decimal``,
  ``date_int``, ``datetime_date_int``, ``bool``, ``product_ref``, ``lines``);
* the *canonical* form every comparison works on, the conversions between it
  and each system's raw records / write payloads, and fingerprints.

Everything here is pure: no I/O except reading the mapping file.

Canonical form
--------------
A flow's values are compared in a dict keyed by the **Customcrm property
name**. Canonical values:

* strings as they are; ``None`` and ``""`` are both ``None``;
* decimals as the normalised text of the Decimal value (``"199.00"`` and
  ``199`` are ``"199"``, ``"1.50"`` is ``"1.5"``, zero is ``"0"``), never in
  exponent notation;
* dates as ISO ``"YYYY-MM-DD"`` (Businessnxt ``Int`` yyyymmdd; ``0``/null is
  ``None``);
* ints as ``int``, booleans as ``bool``;
* line items (``convert: "lines"``) as a list of canonical dicts sorted by the
  line key, a product reference being the Customcrm product ``Id``.

A property whose raw field is *absent* from a raw record (not fetched) is left
out of the canonical dict, so a partial read never looks like a cleared value.
A field that is present with ``null`` is ``None``.

Payload encodings (decisions)
-----------------------------
* Businessnxt ``Decimal`` values are sent as JSON numbers: an ``int`` when the
  value is integral, else a ``float`` whose shortest representation is exactly
  the decimal (orjson and ``json`` both print that shortest form, so the JSON
  text carries the exact decimal). A value that a float cannot carry exactly
  (more than ~15 significant digits) raises :class:`MappingError` rather than
  being rounded silently.
* Businessnxt dates: ``None`` is sent as ``0`` (Business NXT's empty date).
  Other empty values are sent as ``null``.
* Customcrm decimals are sent as canonical decimal strings, dates as ISO text.
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Context, Decimal, InvalidOperation, localcontext
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Protocol, runtime_checkable

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "MappingError",
    "MissingReferences",
    "RefResolver",
    "DictRefResolver",
    "Mapping",
    "Flow",
    "Property",
    "Endpoint",
    "TargetEndpoint",
    "Origin",
    "Match",
    "TableRow",
    "LineChanges",
    "CONVERTERS",
    "load_mapping",
    "parse_mapping",
    "fingerprint",
    "is_empty",
]

Side = Literal["source", "target"]
Direction = Literal["both", "create_only", "to_target"]

SYSTEM_LABELS = {"customcrm": "Customcrm", "businessnxt": "Businessnxt"}

_UNSET: Any = object()


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


class MappingError(ValueError):
    """An invalid value for a mapped property, or an invalid mapping file.

    Attributes: ``flow`` (flow id or None), ``path`` (canonical property path
    such as ``Lines[2].Quantity``, or None), ``reason``, ``value`` (the
    offending raw value, when there is one) and ``field`` (the name of the
    field on the side being converted, when it differs from ``path``).
    """

    def __init__(
        self,
        reason: str,
        *,
        flow: str | None = None,
        path: str | None = None,
        value: Any = _UNSET,
        field: str | None = None,
    ) -> None:
        self.reason = reason
        self.flow = flow
        self.path = path
        self.value = None if value is _UNSET else value
        self.has_value = value is not _UNSET
        self.field = field
        parts = []
        if flow is not None:
            parts.append(f"flow {flow!r}")
        if path is not None:
            where = f"property {path}"
            if field is not None and field != path:
                where += f" ({field})"
            parts.append(where)
        text = reason if not parts else ", ".join(parts) + ": " + reason
        if value is not _UNSET:
            text += f" (value {value!r})"
        super().__init__(text)

    def __reduce__(self):
        kwargs = {"flow": self.flow, "path": self.path, "field": self.field}
        if self.has_value:
            kwargs["value"] = self.value
        return (_rebuild_mapping_error, (self.reason, kwargs))


def _rebuild_mapping_error(reason: str, kwargs: dict) -> MappingError:
    return MappingError(reason, **kwargs)


class MissingReferences(Exception):
    """Product references of one record that are not linked (yet).

    ``ids`` lists every unresolved reference of the record, in order of first
    appearance, as seen on the side being converted: Businessnxt ``productNo``
    values when reading a Businessnxt order, Customcrm product ``Id`` values
    when building a Businessnxt payload.
    """

    def __init__(self, ids: Iterable[str], *, flow: str | None = None, side: str | None = None) -> None:
        self.ids: list[str] = list(dict.fromkeys(ids))
        self.flow = flow
        self.side = side
        what = {
            "target": "Businessnxt productNo",
            "source": "Customcrm product Id",
        }.get(side or "", "product reference")
        prefix = f"flow {flow!r}: " if flow else ""
        n = len(self.ids)
        super().__init__(
            f"{prefix}{n} product reference{'s' if n != 1 else ''} not linked yet "
            f"({what}): {', '.join(self.ids)}"
        )

    def __reduce__(self):
        return (_rebuild_missing, (self.ids, self.flow, self.side))


def _rebuild_missing(ids, flow, side) -> MissingReferences:
    return MissingReferences(ids, flow=flow, side=side)


class _Invalid(Exception):
    """Raised by converters; the flow turns it into a MappingError with a path."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------
# Reference resolution
# --------------------------------------------------------------------------


@runtime_checkable
class RefResolver(Protocol):
    """Resolves product references through the ``product-product`` links."""

    def to_target(self, source_id: str) -> str | None:
        """Customcrm product Id -> Businessnxt productNo, or None when unlinked."""

    def to_source(self, target_id: str) -> str | None:
        """Businessnxt productNo -> Customcrm product Id, or None when unlinked."""


class DictRefResolver:
    """A :class:`RefResolver` over a plain ``{customcrm_id: productNo}`` dict."""

    def __init__(self, source_to_target: dict[str, str] | None = None) -> None:
        self.source_to_target: dict[str, str] = dict(source_to_target or {})

    def to_target(self, source_id: str) -> str | None:
        return self.source_to_target.get(source_id)

    def to_source(self, target_id: str) -> str | None:
        for source_id, no in self.source_to_target.items():
            if no == target_id:
                return source_id
        return None


# --------------------------------------------------------------------------
# Value helpers
# --------------------------------------------------------------------------


def is_empty(value: Any) -> bool:
    """True for values that count as "no value": None, "", an empty list/dict."""
    if value is None:
        return True
    if isinstance(value, str):
        return value == ""
    if isinstance(value, (list, tuple, dict)):
        return len(value) == 0
    return False


_WIDE = Context(prec=200)
_ISO_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_INT_RE = re.compile(r"[+-]?\d+")


def _type_name(value: Any) -> str:
    return type(value).__name__


def _as_decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _Invalid("expected a decimal number, got a boolean")
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, int):
        d = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid("expected a finite decimal number")
        d = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            d = Decimal(value.strip())
        except InvalidOperation:
            raise _Invalid("not a decimal number") from None
    else:
        raise _Invalid(f"expected a decimal number, got {_type_name(value)}")
    if not d.is_finite():
        raise _Invalid("expected a finite decimal number")
    return d


@lru_cache(maxsize=4096)  # equal decimals have the same text; prices and quantities repeat
def _decimal_text(d: Decimal) -> str:
    if d == 0:
        return "0"
    with localcontext(_WIDE):
        text = format(d.normalize(), "f")
    return text


def _canon_decimal(value: Any) -> str | None:
    if value.__class__ is str:  # most decimals come as text, and the same texts come again
        return _canon_decimal_text(value)
    d = _as_decimal(value)
    return None if d is None else _decimal_text(d)


@lru_cache(maxsize=16384)
def _canon_decimal_text(value: str) -> str | None:
    d = _as_decimal(value)
    return None if d is None else _decimal_text(d)


def _decimal_to_number(text: str | None) -> int | float | None:
    if text is None:
        return None
    d = Decimal(text)
    if d == d.to_integral_value():
        return int(d)
    f = float(d)
    if Decimal(repr(f)) != d:
        raise _Invalid("cannot be sent exactly as a JSON number (too many significant digits)")
    return f


def _canon_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _Invalid("expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value):
            return int(value)
        raise _Invalid("expected an integer")
    if isinstance(value, Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        raise _Invalid("expected an integer")
    if isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
        return int(value.strip())
    raise _Invalid("expected an integer" + ("" if isinstance(value, str) else f", got {_type_name(value)}"))


def _canon_string(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    raise _Invalid(f"expected a string, got {_type_name(value)}")


def _canon_bool(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _Invalid("expected a boolean")


def _canon_iso_date(value: Any) -> str | None:
    """Canonical / Customcrm date: ISO ``YYYY-MM-DD`` (or a date object)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        raise _Invalid("expected a date YYYY-MM-DD, got a date-time")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str) and _ISO_DATE_RE.fullmatch(value.strip()):
        try:
            return date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            raise _Invalid("not a valid date") from None
    raise _Invalid("expected a date YYYY-MM-DD")


def _date_from_int(value: Any) -> str | None:
    """Businessnxt date: Int yyyymmdd; 0 or null is no date."""
    if value is None or value == 0 or value == "":
        return None
    if isinstance(value, bool):
        raise _Invalid("expected a yyyymmdd integer date, got a boolean")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise _Invalid("expected a yyyymmdd integer date")
    if not 10000101 <= value <= 99991231:
        raise _Invalid("not a valid yyyymmdd date")
    try:
        return date(value // 10000, value // 100 % 100, value % 100).isoformat()
    except ValueError:
        raise _Invalid("not a valid yyyymmdd date") from None


def _date_to_int(iso: str | None) -> int:
    if iso is None:
        return 0
    d = date.fromisoformat(iso)
    return d.year * 10000 + d.month * 100 + d.day


def _date_from_datetime(value: Any) -> str | None:
    """RFC 3339 date-time -> the ISO date of its UTC date part."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            raise _Invalid("not a valid RFC 3339 date-time") from None
    else:
        raise _Invalid("expected an RFC 3339 date-time")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).date().isoformat()


# --------------------------------------------------------------------------
# Converters
# --------------------------------------------------------------------------


@dataclass
class _Ctx:
    """Per-call conversion context: reference resolver and unresolved refs."""

    refs: RefResolver | None = None
    missing: list[str] = field(default_factory=list)

    def resolver(self, flow: str) -> RefResolver:
        if self.refs is None:
            raise TypeError(f"flow {flow!r}: converting product references needs a RefResolver (refs=...)")
        return self.refs


@dataclass(frozen=True)
class _Converter:
    """One value converter.

    ``canonical`` normalises a canonical value; ``from_source`` /
    ``from_target`` read a raw value of that system; ``to_source`` /
    ``to_target`` encode a canonical value for a write.
    """

    name: str
    canonical: Callable[[Any], Any]
    from_source: Callable[[Any, _Ctx, str], Any]
    from_target: Callable[[Any, _Ctx, str], Any]
    to_source: Callable[[Any], Any]
    to_target: Callable[[Any, _Ctx, str], Any]
    numeric: bool = False
    source_writable: bool = True  # False: the Customcrm field is read-only


def _same(fn: Callable[[Any], Any]) -> Callable[[Any, _Ctx, str], Any]:
    return lambda value, ctx, flow: fn(value)


def _ref_from_target(value: Any, ctx: _Ctx, flow: str) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    no = _canon_string(value)
    if no is None:
        return None
    source_id = ctx.resolver(flow).to_source(no)
    if source_id is None:
        ctx.missing.append(no)
    return source_id


def _ref_to_target(value: Any, ctx: _Ctx, flow: str) -> str | None:
    if value is None:
        return None
    no = ctx.resolver(flow).to_target(value)
    if no is None:
        ctx.missing.append(value)
    return no


def _identity(value: Any) -> Any:
    return value


def _encode_number(value: Any, ctx: _Ctx, flow: str) -> Any:
    return _decimal_to_number(value)


_CONVERTER_LIST = [
    _Converter("string", _canon_string, _same(_canon_string), _same(_canon_string), _identity, _same(_identity)),
    _Converter("int", _canon_int, _same(_canon_int), _same(_canon_int), _identity, _same(_identity), numeric=True),
    _Converter(
        "decimal", _canon_decimal, _same(_canon_decimal), _same(_canon_decimal), _identity, _encode_number, numeric=True
    ),
    _Converter(
        "date_int",
        _canon_iso_date,
        _same(_canon_iso_date),
        _same(_date_from_int),
        _identity,
        lambda v, ctx, flow: _date_to_int(v),
    ),
    _Converter(
        "datetime_date_int",
        _canon_iso_date,
        _same(_date_from_datetime),
        _same(_date_from_int),
        _identity,
        lambda v, ctx, flow: _date_to_int(v),
        source_writable=False,
    ),
    _Converter("bool", _canon_bool, _same(_canon_bool), _same(_canon_bool), _identity, _same(_identity)),
    _Converter(
        "product_ref", _canon_string, _same(_canon_string), _ref_from_target, _identity, _ref_to_target
    ),
]
_CONVERTERS: dict[str, _Converter] = {c.name: c for c in _CONVERTER_LIST}

#: Every converter name a mapping file may use.
CONVERTERS: tuple[str, ...] = tuple(sorted([*_CONVERTERS, "lines"]))


# --------------------------------------------------------------------------
# The mapping models
# --------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Endpoint(_Model):
    """One side of a flow: system, entity, and the label used in the docs."""

    system: Literal["customcrm", "businessnxt"]
    entity: str
    label: str


class TargetEndpoint(Endpoint):
    """The Businessnxt side; ``key`` is the primary-key field of the table."""

    key: str


class Origin(_Model):
    """Where the origin stamp goes on the target and its format (with ``{id}``)."""

    field: str
    format: str


class Match(_Model):
    """Natural-key match: a target whose ``target`` equals the source's ``source`` is linked."""

    source: str
    target: str


class Property(_Model):
    """One mapped property (a table row), or a line-item list with ``items``."""

    source: str | None = None
    setting: str | None = None
    target: str
    type: str
    convert: str
    direction: Direction = "both"
    key: str | None = None
    join: str | None = None
    items: list["Property"] | None = None
    minimum: Decimal | None = None
    exclusive_minimum: Decimal | None = None
    note: str | None = None

    @property
    def is_lines(self) -> bool:
        return self.convert == "lines"

    @property
    def create_only(self) -> bool:
        return self.direction == "create_only"


@dataclass(frozen=True)
class TableRow:
    """One row of a flow's property table, as the dataflow document shows it."""

    source: str  # e.g. "Name", "Lines[].LineNo", "(setting)"
    target: str  # e.g. "name", "orderLines[].lineNo"
    type: str  # the "Businessnxt Data Type" column
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class LineChanges:
    """Line items that differ between two canonical line lists (by line key).

    ``added`` and ``changed`` hold the new canonical lines, ``removed`` the old
    ones; each list is sorted by the line key.
    """

    added: list[dict]
    changed: list[dict]
    removed: list[dict]

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)


class Flow(_Model):
    """One flow of the dataflow, with its conversions (see the module docstring)."""

    id: str
    title: str
    source: Endpoint
    target: TargetEndpoint
    origin: Origin | None = None
    match: Match | None = None
    create_in_source: bool = False
    on_delete: Literal["ignore", "propagate"] = "ignore"
    empty_never_overwrites: bool = True
    properties: list[Property]

    # ---- introspection -------------------------------------------------

    @property
    def expected_title(self) -> str:
        return f"Customcrm {self.source.label} to Businessnxt {self.target.label}"

    @property
    def origin_field(self) -> str | None:
        """The Businessnxt field holding the origin stamp, or None."""
        return self.origin.field if self.origin else None

    @property
    def lines_property(self) -> Property | None:
        return next((p for p in self.properties if p.is_lines), None)

    def property_by_name(self, name: str) -> Property:
        """The top-level property with this Customcrm (canonical) name."""
        for prop in self.properties:
            if prop.source == name:
                return prop
        raise KeyError(f"flow {self.id!r} has no property {name!r}")

    def property_names(self, include_create_only: bool = False) -> list[str]:
        """Canonical property names in mapping order (settings excluded)."""
        return [
            p.source
            for p in self.properties
            if p.source is not None and (include_create_only or not p.create_only)
        ]

    def create_only_names(self) -> list[str]:
        """Canonical names of the create-only properties (e.g. ``Sku``)."""
        return list(self._create_only_names)

    @cached_property
    def _create_only_names(self) -> tuple[str, ...]:
        return tuple(p.source for p in self.properties if p.source is not None and p.create_only)

    @cached_property
    def _directions(self) -> dict[str, str]:
        return {p.source: p.direction for p in self.properties if p.source is not None}

    def syncs_back(self, name: str) -> bool:
        """True when a Businessnxt change of this property is written to Customcrm."""
        direction = self._directions.get(name)
        if direction is None:
            return self.property_by_name(name).direction == "both"  # KeyError for an unknown name
        return direction == "both"

    @cached_property
    def _reference_items(self) -> tuple[tuple[str, str], ...]:
        """(lines property, item property) of the line items that name a product."""
        return tuple((p.source, i.source) for p in self.properties if p.is_lines and p.source
                     for i in p.items or () if i.convert == "product_ref" and i.source)

    @property
    def names_products(self) -> bool:
        """Do this flow's source records name products (resolved through the product links)?"""
        return bool(self._reference_items)

    def source_references(self, record: Any) -> list[str]:
        """The Customcrm product ids a source record names, in order, each once (anything that
        is not one, e.g. a malformed line, is passed over: the decision reports it)."""
        ids: dict[str, None] = {}
        if isinstance(record, dict):
            for lines_name, item_name in self._reference_items:
                lines = record.get(lines_name)
                for line in lines if isinstance(lines, list) else ():
                    value = line.get(item_name) if isinstance(line, dict) else None
                    if isinstance(value, str):
                        ids[value] = None
        return list(ids)

    def target_fields(self) -> list[str]:
        """Top-level Businessnxt fields a connector should select for this flow
        (key, origin field, mapped non-line fields), in a stable order."""
        names = [self.target.key]
        if self.origin:
            names.append(self.origin.field)
        names += [p.target for p in self.properties if not p.is_lines]
        return list(dict.fromkeys(names))

    def line_fields(self) -> list[str]:
        """Businessnxt fields of the line items (empty without lines)."""
        lines = self.lines_property
        return [i.target for i in lines.items] if lines and lines.items else []

    def table_rows(self) -> list[TableRow]:
        """The rows of this flow's property table (the dataflow document)."""
        rows: list[TableRow] = []
        for prop in self.properties:
            if prop.is_lines:
                for item in prop.items or []:
                    rows.append(
                        TableRow(
                            f"{prop.source}[].{item.source}",
                            f"{prop.target}[].{item.target}",
                            item.type,
                            self._row_notes(item, line_key=item.source == prop.key),
                        )
                    )
            else:
                rows.append(
                    TableRow(
                        prop.source if prop.source is not None else "(setting)",
                        prop.target,
                        prop.type,
                        self._row_notes(prop),
                    )
                )
        return rows

    def _row_notes(self, prop: Property, *, line_key: bool = False) -> tuple[str, ...]:
        notes = []
        if self.match and prop.source == self.match.source and prop.setting is None:
            notes.append("match key")
        if line_key:
            notes.append("line key")
        if prop.setting is not None:
            notes.append(f"from the setting {prop.setting}")
        if prop.direction == "create_only":
            notes.append("create only")
        elif prop.direction == "to_target":
            notes.append("to Businessnxt only")
        if prop.note:
            notes.append(prop.note)
        return tuple(notes)

    # ---- ids, origin stamps, match keys -------------------------------

    def target_id(self, record: dict) -> str | None:
        """The Businessnxt primary key of a row, as a string."""
        value = record.get(self.target.key)
        return None if value is None or value == "" else str(value)

    def origin_stamp(self, source_id: str) -> str:
        """The origin stamp written to ``origin.field`` for a Customcrm record."""
        if self.origin is None:
            raise MappingError("this flow has no origin stamp (it matches by key)", flow=self.id)
        if not source_id:
            raise MappingError("an origin stamp needs a non-empty source id", flow=self.id)
        return self.origin.format.replace("{id}", source_id)

    def parse_origin(self, stamp: str | None) -> str | None:
        """The Customcrm id in an origin stamp, or None when it is not this flow's."""
        if self.origin is None or not isinstance(stamp, str):
            return None
        prefix, _, suffix = self.origin.format.partition("{id}")
        if len(stamp) <= len(prefix) + len(suffix) or not stamp.startswith(prefix) or not stamp.endswith(suffix):
            return None
        source_id = stamp[len(prefix) : len(stamp) - len(suffix)]
        return source_id or None

    def match_value(self, side: Side, record: dict) -> str | None:
        """The natural match key of a raw record (None without a match)."""
        if self.match is None:
            return None
        raw = record.get(self.match.source if side == "source" else self.match.target)
        if raw is None or raw == "":
            return None
        return str(raw)

    # ---- conversions -----------------------------------------------------

    def to_canonical(
        self,
        side: Side,
        record: dict,
        *,
        refs: RefResolver | None = None,
        include_create_only: bool = False,
    ) -> dict:
        """Canonical dict of a raw record of ``side``.

        ``side="source"``: a Customcrm record (PascalCase names);
        ``side="target"``: a Businessnxt row (camelCase; lines in
        ``orderLines`` or ``joindown_OrderLine_via_Order.items``). Properties
        absent from the record are left out. Raises :class:`MappingError` on
        an invalid value and :class:`MissingReferences` (target side) when a
        productNo has no link.
        """
        _check_side(side)
        if not isinstance(record, dict):
            raise MappingError(f"expected a record (dict), got {_type_name(record)}", flow=self.id)
        ctx = _Ctx(refs=refs)
        out: dict[str, Any] = {}
        for prop in self.properties:
            if prop.source is None or (prop.create_only and not include_create_only):
                continue
            present, raw = self._raw_value(side, prop, record)
            if not present:
                continue
            if prop.is_lines:
                out[prop.source] = self._lines_in(side, prop, raw, ctx)
            else:
                out[prop.source] = self._value_in(side, prop, raw, ctx, prop.source, prop.target)
        if ctx.missing:
            raise MissingReferences(ctx.missing, flow=self.id, side=side)
        return out

    def normalise(self, canonical: dict) -> dict:
        """Re-normalise (and validate) a canonical dict; unknown keys are kept as is."""
        out: dict[str, Any] = {}
        for name, value in canonical.items():
            prop = self._prop_or_none(name)
            out[name] = value if prop is None else self._canonical_value(prop, value, name)
        return out

    def to_target_data(
        self,
        canonical: dict,
        *,
        create: bool,
        settings: Any = None,
        refs: RefResolver | None = None,
        source_id: str | None = None,
    ) -> dict:
        """Businessnxt input values (camelCase) for the properties present in
        ``canonical``, in mapping order.

        Create-only properties and setting-based properties are included only
        when ``create=True`` (settings are read from ``settings``, a dict or an
        object with attributes). With ``create=True`` and ``source_id`` the
        origin stamp is added too. Lines become ``orderLines: [{lineNo,
        productNo, quantity, priceInCurrency, description}]``, product refs
        resolved with ``refs.to_target``; raises :class:`MissingReferences`
        listing every unlinked Customcrm product Id.
        """
        ctx = _Ctx(refs=refs)
        out: dict[str, Any] = {}
        for prop in self.properties:
            if prop.create_only and not create:
                continue
            if prop.setting is not None:
                value = _read_setting(settings, prop.setting)
                if value is _UNSET:
                    raise MappingError(
                        f"the setting {prop.setting!r} is required to create a record",
                        flow=self.id,
                        path=f"(setting {prop.setting})",
                        field=prop.target,
                    )
                canon = self._canonical_value(prop, value, f"(setting {prop.setting})")
                out[prop.target] = self._encode_target(prop, canon, ctx, f"(setting {prop.setting})")
                continue
            if prop.source not in canonical:
                continue
            value = canonical[prop.source]
            if prop.is_lines:
                lines = self._canonical_lines(prop, value)
                items = prop.items or []
                encoded = []
                for i, line in enumerate(lines):
                    row = {}
                    for item in items:
                        value = line.get(item.source)
                        try:
                            row[item.target] = _CONVERTERS[item.convert].to_target(value, ctx, self.id)
                        except _Invalid as exc:
                            raise self._error(exc.reason, f"{prop.source}[{i}].{item.source}",
                                              f"Businessnxt {item.target}", value) from None
                    encoded.append(row)
                out[prop.target] = encoded
            else:
                canon = self._canonical_value(prop, value, prop.source)
                out[prop.target] = self._encode_target(prop, canon, ctx, prop.source)
        if create and source_id is not None and self.origin is not None:
            out[self.origin.field] = self.origin_stamp(source_id)
        if ctx.missing:
            raise MissingReferences(ctx.missing, flow=self.id, side="source")
        return out

    def to_source_data(self, canonical: dict, *, create: bool = False) -> dict:
        """Customcrm JSON body (PascalCase) for the properties present in
        ``canonical``: decimals as decimal strings, dates ISO, lines as a list.

        Excludes ``to_target`` properties, settings, and create-only
        properties — the latter are included with ``create=True`` when the
        Customcrm field is writable (e.g. ``Sku``; never ``CreatedAt``).
        """
        out: dict[str, Any] = {}
        for prop in self.properties:
            if prop.source is None or prop.direction == "to_target":
                continue
            if prop.create_only and not (create and self._source_writable(prop)):
                continue
            if prop.source not in canonical:
                continue
            value = canonical[prop.source]
            if prop.is_lines:
                out[prop.source] = [
                    {
                        item.source: _CONVERTERS[item.convert].to_source(line.get(item.source))
                        for item in prop.items or []
                    }
                    for line in self._canonical_lines(prop, value)
                ]
            else:
                canon = self._canonical_value(prop, value, prop.source)
                out[prop.source] = _CONVERTERS[prop.convert].to_source(canon)
        return out

    def changed_properties(self, a: dict, b: dict, *, missing_is_none: bool = False) -> list[str]:
        """Names of the properties whose canonical values differ, in mapping order.

        Values are normalised first (``None`` == ``""``, decimals by value,
        lines by line key). A property absent from either dict is unknown and
        not reported, unless ``missing_is_none=True`` (then absent is ``None``).
        """
        known = [p.source for p in self.properties if p.source is not None]
        extra = sorted((set(a) | set(b)) - set(known))
        changed: list[str] = []
        for name in known + extra:
            in_a, in_b = name in a, name in b
            if not (in_a or in_b):
                continue
            if not (in_a and in_b) and not missing_is_none:
                continue
            if self._comparable(name, a.get(name)) != self._comparable(name, b.get(name)):
                changed.append(name)
        return changed

    def line_changes(self, before: list[dict] | None, after: list[dict] | None) -> LineChanges:
        """Which lines were added, changed or removed from ``before`` to
        ``after`` (canonical line lists, e.g. for orderLine mutations)."""
        prop = self.lines_property
        if prop is None:
            raise ValueError(f"flow {self.id!r} has no line items")
        old = {line[prop.key]: line for line in self._canonical_lines(prop, before)}
        new = {line[prop.key]: line for line in self._canonical_lines(prop, after)}
        return LineChanges(
            added=[line for key, line in new.items() if key not in old],
            changed=[line for key, line in new.items() if key in old and old[key] != line],
            removed=[line for key, line in old.items() if key not in new],
        )

    # ---- internals -------------------------------------------------------

    def _prop_or_none(self, name: str) -> Property | None:
        return next((p for p in self.properties if p.source == name), None)

    @staticmethod
    def _source_writable(prop: Property) -> bool:
        return prop.is_lines or _CONVERTERS[prop.convert].source_writable

    def _raw_value(self, side: Side, prop: Property, record: dict) -> tuple[bool, Any]:
        if side == "source":
            return (prop.source in record, record.get(prop.source))
        if prop.target in record:
            raw = record[prop.target]
        elif prop.join and prop.join in record:
            raw = record[prop.join]
        else:
            return (False, None)
        if prop.is_lines and isinstance(raw, dict) and "items" in raw:
            raw = raw["items"]
        return (True, raw)

    def _error(self, reason: str, path: str, field: str | None, value: Any = _UNSET) -> MappingError:
        return MappingError(reason, flow=self.id, path=path, field=field, value=value)

    @staticmethod
    def _bounded(prop: Property, canon: Any) -> Any:
        """``canon``, or ``_Invalid`` when it is below the property's minimum."""
        if canon is None or (prop.minimum is None and prop.exclusive_minimum is None):
            return canon
        number = Decimal(canon)  # canonical int or decimal text
        if prop.minimum is not None and number < prop.minimum:
            raise _Invalid(f"must be at least {_decimal_text(prop.minimum)}")
        if prop.exclusive_minimum is not None and number <= prop.exclusive_minimum:
            raise _Invalid(f"must be greater than {_decimal_text(prop.exclusive_minimum)}")
        return canon

    def _read(self, side: Side, prop: Property, raw: Any, ctx: _Ctx) -> Any:
        """The canonical value of one raw value; raises ``_Invalid`` (the caller names the
        path: building it for every value cost more than the conversion)."""
        conv = _CONVERTERS[prop.convert]
        return self._bounded(prop, (conv.from_source if side == "source" else conv.from_target)(raw, ctx, self.id))

    def _value_in(self, side: Side, prop: Property, raw: Any, ctx: _Ctx, path: str, field_: str) -> Any:
        try:
            return self._read(side, prop, raw, ctx)
        except _Invalid as exc:
            raise self._error(exc.reason, path, None if side == "source" else f"Businessnxt {field_}", raw) from None

    def _lines_in(self, side: Side, prop: Property, raw: Any, ctx: _Ctx) -> list[dict]:
        field_name = prop.source if side == "source" else prop.target
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise self._error(
                "expected a list of lines", prop.source, None if side == "source" else f"Businessnxt {field_name}",
                raw,
            )
        lines = []
        for i, line in enumerate(raw):
            if not isinstance(line, dict):
                raise self._error("expected a line object", f"{prop.source}[{i}]", None, line)
            path = f"{prop.source}[{i}]"
            item_out = {}
            for item in prop.items or []:
                raw_item = line.get(item.source if side == "source" else item.target)
                try:
                    item_out[item.source] = self._read(side, item, raw_item, ctx)
                except _Invalid as exc:
                    raise self._error(exc.reason, f"{path}.{item.source}", None if side == "source"
                                      else f"Businessnxt {prop.target}[{i}].{item.target}", raw_item) from None
            lines.append(item_out)
        return self._sorted_lines(prop, lines)

    def _sorted_lines(self, prop: Property, lines: list[dict]) -> list[dict]:
        key = prop.key
        seen: set = set()
        for i, line in enumerate(lines):
            value = line.get(key)
            if value is None:
                raise self._error(f"the line key {key} is missing", f"{prop.source}[{i}].{key}", None)
            if value in seen:
                raise self._error(f"duplicate line key {key}", f"{prop.source}[{i}].{key}", None, value)
            seen.add(value)
        return sorted(lines, key=lambda line: line[key])

    def _canonical(self, prop: Property, value: Any) -> Any:
        """A canonical value normalised again; raises ``_Invalid`` (the caller names the path)."""
        return self._bounded(prop, _CONVERTERS[prop.convert].canonical(value))

    def _canonical_value(self, prop: Property, value: Any, path: str) -> Any:
        if prop.is_lines:
            return self._canonical_lines(prop, value)
        try:
            return self._canonical(prop, value)
        except _Invalid as exc:
            raise self._error(exc.reason, path, None, value) from None

    def _canonical_lines(self, prop: Property, value: Any) -> list[dict]:
        if value is None:
            return []
        if not isinstance(value, (list, tuple)):
            raise self._error("expected a list of lines", prop.source, None, value)
        items = prop.items or []
        lines = []
        for i, line in enumerate(value):
            if not isinstance(line, dict):
                raise self._error("expected a line object", f"{prop.source}[{i}]", None, line)
            out = {}
            for item in items:
                item_value = line.get(item.source)
                try:
                    out[item.source] = self._canonical(item, item_value)
                except _Invalid as exc:
                    raise self._error(exc.reason, f"{prop.source}[{i}].{item.source}", None, item_value) from None
            lines.append(out)
        return self._sorted_lines(prop, lines)

    def _encode_target(self, prop: Property, canon: Any, ctx: _Ctx, path: str) -> Any:
        try:
            return _CONVERTERS[prop.convert].to_target(canon, ctx, self.id)
        except _Invalid as exc:
            raise self._error(exc.reason, path, f"Businessnxt {prop.target}", canon) from None

    def _comparable(self, name: str, value: Any) -> Any:
        prop = self._prop_or_none(name)
        if prop is not None:
            try:
                return self._canonical_value(prop, value, name)
            except MappingError:
                pass
        return _plain(value)


def _check_side(side: str) -> None:
    if side not in ("source", "target"):
        raise ValueError(f"side must be 'source' or 'target', not {side!r}")


def _read_setting(settings: Any, name: str) -> Any:
    if settings is None:
        return _UNSET
    if isinstance(settings, dict):
        return settings.get(name, _UNSET)
    return getattr(settings, name, _UNSET)


class Mapping(_Model):
    """The whole mapping file: a version and the flows, in document order."""

    version: Literal[1]
    flows: list[Flow]

    def flow(self, flow_id: str) -> Flow:
        for f in self.flows:
            if f.id == flow_id:
                return f
        raise KeyError(f"no flow {flow_id!r} (known: {', '.join(f.id for f in self.flows)})")

    def reference_sources(self) -> set[tuple[str, str]]:
        """The source (system, entity) pairs whose links are the product references: flows
        matched by key (``product-product``)."""
        return {(f.source.system, f.source.entity) for f in self.flows if f.match is not None}

    def flows_for(self, system: str, entity: str) -> list[Flow]:
        """Flows with ``system``/``entity`` on either side, in file order."""
        return [
            f
            for f in self.flows
            if (f.source.system, f.source.entity) == (system, entity)
            or (f.target.system, f.target.entity) == (system, entity)
        ]


# --------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------

DEFAULT_MAPPING_RESOURCE = ("schemas", "mapping.json")


def load_mapping(path: str | Path | None = None) -> Mapping:
    """Read and validate a mapping file (default: the packaged ``schemas/mapping.json``)."""
    if path is None:
        package, name = DEFAULT_MAPPING_RESOURCE
        where = f"{package}/{name}"
        text = resources.files(package).joinpath(name).read_bytes()
    else:
        where = str(path)
        text = Path(path).read_bytes()
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise MappingError(f"{where}: not valid JSON: {exc}") from None
    return parse_mapping(data, where=where)


def parse_mapping(data: Any, *, where: str = "mapping") -> Mapping:
    """Validate already-parsed mapping data (see :func:`load_mapping`)."""
    try:
        mapping = Mapping.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = list(err["loc"])
        flow_id = None
        if len(loc) >= 2 and loc[0] == "flows" and isinstance(loc[1], int):
            try:
                flow_id = data["flows"][loc[1]].get("id")
            except (KeyError, IndexError, TypeError, AttributeError):
                flow_id = None
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise MappingError(
            f"{where}: invalid mapping at {_loc_text(loc)}: {err['msg']}{more}", flow=flow_id
        ) from None
    _validate(mapping, where)
    return mapping


def _loc_text(loc: list) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _validate(mapping: Mapping, where: str) -> None:
    creating = [f"{f.target.system}.{f.target.entity}" for f in mapping.flows if f.create_in_source]
    if len(creating) != len(set(creating)):
        raise MappingError(f"{where}: at most one flow per Business NXT entity may set create_in_source "
                           "(an unstamped record would otherwise create a Customcrm record in each)")
    seen: set[str] = set()
    for flow in mapping.flows:

        def fail(reason: str, path: str | None = None) -> MappingError:
            return MappingError(f"{where}: {reason}", flow=flow.id, path=path)

        if not flow.id:
            raise fail("a flow needs a non-empty id")
        if flow.id in seen:
            raise fail("duplicate flow id")
        if ":" in flow.id:
            raise fail("a flow id cannot contain ':' (a link key is <flow id>:<record>)")
        seen.add(flow.id)
        if flow.source.system != "customcrm" or flow.target.system != "businessnxt":
            raise fail("a flow goes from customcrm (source) to businessnxt (target)")
        if flow.create_in_source and flow.origin is None:
            raise fail("create_in_source needs an origin stamp (the new Customcrm record's id is stamped on the "
                       "Business NXT record); flows that match by key do not support it")
        if flow.title != flow.expected_title:
            raise fail(f"title must be {flow.expected_title!r}, not {flow.title!r}")
        if not flow.properties:
            raise fail("a flow needs at least one property")
        sources: set[str] = set()
        targets: set[str] = set()
        for i, prop in enumerate(flow.properties):
            path = prop.source or (f"(setting {prop.setting})" if prop.setting else f"properties[{i}]")
            _validate_property(prop, path, fail, top_level=True)
            if prop.source is not None:
                if prop.source in sources:
                    raise fail("duplicate source property", path)
                sources.add(prop.source)
            if prop.target in targets:
                raise fail(f"duplicate target property {prop.target!r}", path)
            targets.add(prop.target)
        if sum(p.is_lines for p in flow.properties) > 1:
            raise fail("at most one line-item property per flow")
        if flow.origin is not None:
            if flow.origin.format.count("{id}") != 1:
                raise fail("the origin format must contain {id} exactly once")
            if flow.origin.field in targets:
                raise fail(f"the origin field {flow.origin.field!r} is also a mapped property")
        if flow.match is not None:
            try:
                prop = flow.property_by_name(flow.match.source)
            except KeyError:
                raise fail(f"the match source {flow.match.source!r} is not a mapped property") from None
            if prop.target != flow.match.target:
                raise fail(
                    f"the match target {flow.match.target!r} is not the target of {flow.match.source!r}",
                    flow.match.source,
                )


def _validate_property(prop: Property, path: str, fail: Callable[..., MappingError], *, top_level: bool) -> None:
    if (prop.source is None) == (prop.setting is None):
        raise fail("a property needs exactly one of 'source' and 'setting'", path)
    if prop.setting is not None and not top_level:
        raise fail("a line item cannot come from a setting", path)
    if prop.setting is not None and prop.direction != "create_only":
        raise fail("a setting-based property must be create_only", path)
    if not prop.target:
        raise fail("a property needs a target", path)
    if not prop.type.strip():
        raise fail("a property needs a type (the Businessnxt data type)", path)
    if prop.convert not in CONVERTERS:
        raise fail(f"unknown converter {prop.convert!r} (known: {', '.join(CONVERTERS)})", path)
    if not top_level and prop.direction != "both":
        raise fail("line items sync both ways; set direction on the line property", path)
    if prop.is_lines:
        if not top_level:
            raise fail("line items cannot be nested", path)
        if prop.setting is not None:
            raise fail("line items cannot come from a setting", path)
        if not prop.items:
            raise fail("a 'lines' property needs 'items'", path)
        if prop.minimum is not None or prop.exclusive_minimum is not None:
            raise fail("bounds apply to int and decimal properties only", path)
        names = [item.source for item in prop.items]
        if prop.key is None or prop.key not in names:
            raise fail("a 'lines' property needs a 'key' naming one of its items", path)
        if len(set(names)) != len(names) or len({i.target for i in prop.items}) != len(prop.items):
            raise fail("duplicate line item property", path)
        for item in prop.items:
            _validate_property(item, f"{prop.source}[].{item.source}", fail, top_level=False)
        return
    if prop.items is not None or prop.key is not None or prop.join is not None:
        raise fail("'items', 'key' and 'join' belong to 'lines' properties only", path)
    conv = _CONVERTERS[prop.convert]
    if (prop.minimum is not None or prop.exclusive_minimum is not None) and not conv.numeric:
        raise fail("bounds apply to int and decimal properties only", path)
    if not conv.source_writable and prop.direction == "both":
        raise fail(
            f"the {prop.convert} converter cannot write Customcrm: use direction create_only or to_target", path
        )


# --------------------------------------------------------------------------
# Fingerprints
# --------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Plain JSON data for hashing / comparison: "" is None, Decimals normalised."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, Decimal):
        return _decimal_text(value) if value.is_finite() else str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def fingerprint(canonical: dict) -> str:
    """A stable short hash (32 hex chars) of a canonical dict.

    Keys are sorted, ``""`` counts as ``None`` and Decimal objects are
    normalised, so equal canonical values always give equal fingerprints.
    """
    blob = orjson.dumps(_plain(canonical), option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(blob, digest_size=16).hexdigest()

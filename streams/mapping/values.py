"""The value converters a mapping file names (``string``, ``int``, ``decimal``, ``date_int``,
``datetime_date_int``, ``bool``, ``product_ref``) and the canonical form they convert to
(see ``streams.mapping``'s docstring). Pure.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Context, Decimal, InvalidOperation, localcontext
from functools import lru_cache
from typing import Any, Callable

from streams.mapping.errors import RefResolver, _Invalid

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

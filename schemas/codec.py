"""orjson encoding shared by every topic model (bytes in, bytes out)."""
from __future__ import annotations

from typing import Any

import orjson

_OPTS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> bytes:
    """Encode plain data (dicts, lists, datetimes, Decimals as str) to JSON bytes."""
    return orjson.dumps(value, option=_OPTS, default=_default)


def loads(raw: bytes | str) -> Any:
    return orjson.loads(raw)


def _default(obj: Any) -> Any:
    from decimal import Decimal

    if isinstance(obj, Decimal):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json", by_alias=True)
    raise TypeError(f"cannot JSON-encode {type(obj).__name__}")

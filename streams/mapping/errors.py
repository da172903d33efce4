"""The mapping's errors and reference resolvers.

``MappingError`` names a value that cannot be converted (flow, path, field, value);
``MissingReferences`` an order line whose product is not linked yet (the link parks);
a ``RefResolver`` translates product ids between the systems.
"""
from __future__ import annotations

from typing import Any, Iterable, Protocol, runtime_checkable

#: "No value given" (a value may be None).
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

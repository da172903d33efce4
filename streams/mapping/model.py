"""The flows as data: the pydantic models of the mapping file (``Mapping``, ``Flow``, ``Property``)
and a flow's conversions between each system's records and the canonical form. Pure.
"""
from __future__ import annotations

from decimal import Decimal
from functools import cached_property
from typing import Any, Literal

from streams.mapping.errors import _UNSET, MappingError, MissingReferences, RefResolver, _Invalid
from streams.mapping.parts import Endpoint, Match, Origin, Property, Side, TargetEndpoint, _Model
from streams.mapping.values import _CONVERTERS, _Ctx, _decimal_text, _plain, _type_name


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

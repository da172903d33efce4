"""Loading the mapping file (``schemas/mapping.json`` by default) and validating it: every flow,
property and converter checked, each error naming where it is.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Callable

import orjson
from pydantic import ValidationError

from streams.mapping.errors import MappingError
from streams.mapping.model import Mapping, Property
from streams.mapping.values import _CONVERTERS, CONVERTERS

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

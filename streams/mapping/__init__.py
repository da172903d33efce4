"""The dataflow mapping as data, and its pure logic.

This package owns (``model``, ``values``, ``errors``, ``load``):

* loading and validating ``schemas/mapping.json`` (the three flows of the
  "Customcrm to Businessnxt" dataflow, see ``docs/mapping.md``) into
  pydantic models (:class:`Mapping`, :class:`Flow`, :class:`Property`);
* the value converters named in that file (``string``, ``int``, ``decimal``,
  ``date_int``, ``datetime_date_int``, ``bool``, ``product_ref``, ``lines``);
* the *canonical* form every comparison works on, the conversions between it
  and each system's raw records / write payloads.

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

from streams.mapping.errors import DictRefResolver, MappingError, MissingReferences, RefResolver
from streams.mapping.load import load_mapping, parse_mapping
from streams.mapping.model import Flow, Mapping
from streams.mapping.parts import Endpoint, Match, Origin, Property, TargetEndpoint
from streams.mapping.values import CONVERTERS, is_empty

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
    "CONVERTERS",
    "load_mapping",
    "parse_mapping",
    "is_empty",
]

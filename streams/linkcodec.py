"""How a link state is stored: compact JSON bytes in the ``links`` table and its changelog.

A settled link repeats itself: what each side last reported (``rep``) and what
we last wrote (``wrote``) are the same property hashes, up to three times, and
most other keys hold their empty defaults. :func:`pack` leaves those out:

- a side's ``rep``/``wrote`` hashes equal to a slot stored before it (in the
  order ``rep.customcrm``, ``rep.businessnxt``, ``wrote.customcrm``,
  ``wrote.businessnxt``) are stored as a reference to it, ``"=rep.customcrm"``;
  empty sides are left out;
- when every ``base`` entry has the same time and side (one record's values,
  the usual case), they are stored once (``bt``) and ``base`` holds the values;
- an acknowledged version (``acked``) that is the version seen is ``"="``;
- keys holding their ``linkstate.new_link`` default are left out, and so is
  ``key`` (the table's key).

:func:`unpack` restores the full state (a referenced slot is copied, so the
decisions may change one side without the other), and reads the full form of
earlier versions unchanged. ``flow``, ``status`` and ``ids`` are always kept:
readers of the changelog (``talkstream status``, users' own consumers) find
them as before. A settled order link takes about half the bytes; no hashing,
only comparisons.

In memory only, a link that has settled (not stored again for a while) is held
deflated with a preset dictionary of the stored form's keys and the flows'
property names (:func:`shrink`; a settled order link: about 150 bytes instead of
about 940); :func:`expand` gives the stored bytes back. The changelog always
carries the JSON. Pure functions, no I/O.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any

import orjson

from streams.engine import SIDES
from streams.linkstate import new_link

SAME = "="  # an acknowledged version that is the one seen
_HASHED = ("rep", "wrote")
_SLOTS = tuple((name, side) for name in _HASHED for side in SIDES)  # a reference names an earlier slot
_ALWAYS = frozenset({"flow", "status", "ids"})
_DEFAULTS_ITEMS = tuple((k, v) for k, v in new_link("", "").items()
                        if k not in _ALWAYS and k not in _HASHED and k != "key")


def pack(link: dict) -> bytes:
    """The stored bytes of a link state (see the module docstring)."""
    out = dict(link)
    del out["key"]
    for name, default in _DEFAULTS_ITEMS:
        if name in out and out[name] == default:
            del out[name]
    stored: list[tuple[str, dict]] = []  # (reference, hashes) of the slots stored so far
    for name in _HASHED:
        value = out.pop(name, None)
        if not isinstance(value, dict):
            if value is not None:
                out[name] = value
            continue
        sides: dict[str, Any] = {}
        for side, hashes in value.items():
            if not hashes:
                continue
            sides[side] = next((ref for ref, earlier in stored if earlier == hashes), None) or hashes
            if sides[side] is hashes:
                stored.append((f"={name}.{side}", hashes))
        if sides:
            out[name] = sides
    base = out.get("base")
    if base:  # one record's values: every entry has the same time and side, stored once
        entries = iter(base.values())
        _, t, side = next(entries)
        if all(entry[1] == t and entry[2] == side for entry in entries):
            out["base"] = {prop: entry[0] for prop, entry in base.items()}
            out["bt"] = (t, side)
    acked, seen = out.get("acked"), out.get("seen") or {}
    if acked:  # the version our write returned is usually the one seen last
        out["acked"] = {side: (SAME if version is not None and version == seen.get(side) else version)
                        for side, version in acked.items()}
    return orjson.dumps(out)


def unpack(key: str, raw: bytes) -> dict:
    """The full link state of stored bytes (packed or not)."""
    link = orjson.loads(raw)
    link["key"] = key
    when = link.pop("bt", None)
    if when is not None:
        t, side = when
        link["base"] = {prop: [value, t, side] for prop, value in link["base"].items()}
    acked = link.get("acked")
    if acked:
        seen = link.get("seen") or {}
        link["acked"] = {side: (seen.get(side) if version == SAME else version) for side, version in acked.items()}
    for name in _HASHED:
        value = link.get(name) or {}
        link[name] = {side: value.get(side) or {} for side in SIDES}
    for name, side in _SLOTS:
        hashes = link[name][side]
        if hashes.__class__ is str:  # "=rep.customcrm": a copy of that slot
            ref_name, _, ref_side = hashes[1:].partition(".")
            link[name][side] = dict(link[ref_name][ref_side])
    for name, default in _DEFAULTS_ITEMS:
        if name not in link:
            link[name] = default.copy() if default.__class__ is dict else default  # flat: a copy suffices
    return link


#: The first byte of a shrunk link (a stored link is JSON: it starts with ``{``).
SHRUNK = b"\x00"


def dictionary(flows: Iterable[tuple[str, Iterable[str]]]) -> bytes:
    """A preset deflate dictionary for the links of ``(flow id, property names)``: what a
    settled link of each flow looks like stored, hashes and values left empty."""
    parts = []
    for flow_id, names in flows:
        props = ",".join(f'"{name}":""' for name in names)
        parts.append(
            f'{{"flow":"{flow_id}","status":"linked","ids":{{"customcrm":"","businessnxt":""}},'
            f'"base":{{{props}}},"seen":{{"customcrm":"","businessnxt":"2026-01-01T00:00:00.0000000Z"}},'
            f'"seq":1,"acked":{{"customcrm":null,"businessnxt":"="}},"rep":{{"customcrm":{{{props}}},'
            f'"businessnxt":"=rep.customcrm"}},"wrote":{{"businessnxt":"=rep.customcrm"}},"bt":[null,"customcrm"]}}')
    return "".join(parts).encode()[-32768:]  # deflate looks back 32 KiB


def mapping_dictionary(mapping) -> bytes:
    """``dictionary`` for every flow of a mapping, its line items' property names included."""
    return dictionary(
        (flow.id, flow.property_names(include_create_only=True)
         + [item.source for prop in flow.properties for item in prop.items or [] if item.source])
        for flow in mapping.flows)


def shrink(raw: bytes, zdict: bytes) -> bytes:
    """A stored link (JSON) as held in memory once settled: deflated with ``zdict``."""
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15, zdict=zdict)
    return SHRUNK + deflate.compress(raw) + deflate.flush()


def expand(held: bytes, zdict: bytes) -> bytes:
    """The stored link (JSON) of what ``shrink`` made; stored JSON is returned as it is."""
    if held[:1] != SHRUNK:
        return held
    inflate = zlib.decompressobj(-15, zdict=zdict)
    return inflate.decompress(memoryview(held)[1:]) + inflate.flush()

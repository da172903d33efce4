"""The "Customcrm to Businessnxt Dataflow" document (``talkstream docs``).

This module owns rendering the dataflow QA checklist as reStructuredText,
with every property table filled from the mapping (``schemas/mapping.json``
via :mod:`streams.mapping`), so the checklist and the running system can never
disagree. The format follows ``docs/mapping.md``: a title, a
``Generated: <timestamp>`` line, an introduction, then per flow a section
``Customcrm <Entity> to Businessnxt <Entity>`` with the checklist's sentences
and a ``.. list-table::`` of the mapped properties (one row per property, line
items as ``Lines[].LineNo``); notes (create only, match key, ...) follow the
table as a bullet list, never as extra columns.

Pure: the caller passes the mapping and the timestamp; nothing is read or
written here.
"""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from streams.mapping import Flow, Mapping, Property, load_mapping

__all__ = [
    "DOCUMENT_TITLE",
    "render_dataflow_rst",
    "render_default",
    "flow_title",
    "flow_sentences",
    "table_header",
    "table_rows",
    "TableRow",
]

DOCUMENT_TITLE = "Customcrm to Businessnxt Dataflow"

INTRODUCTION = (
    "This document describes the Customcrm to Businessnxt dataflow run by "
    "talkstream: which Customcrm records are synchronized with which "
    "Businessnxt records, and which of their properties are kept in sync. "
    "Only Customcrm records create records in Businessnxt. Once two records "
    "are linked, every mapped property syncs both ways unless a note below its "
    "table says otherwise. Values are compared after mapping and "
    "normalisation (decimals by value, an empty string equals no value), so "
    "formatting differences never cause a write. Each property table is "
    "generated from the mapping file the running system uses."
)


def flow_title(flow: Flow) -> str:
    """``Customcrm <Entity> to Businessnxt <Entity>``."""
    return f"Customcrm {flow.source.label} to Businessnxt {flow.target.label}"


def flow_sentences(flow: Flow) -> list[str]:
    """The checklist's sentences of one flow, in order (each is an e2e test)."""
    src, tgt = flow.source.label, flow.target.label
    return [
        f"Every Customcrm {src} will be synchronized with a Businessnxt {tgt}.",
        f"Once a link between a Customcrm {src} and a Businessnxt {tgt} is established, "
        "it will keep in sync between the two systems, regardless of where it is edited.",
        f"The following properties are synchronized between a Customcrm {src} and a Businessnxt {tgt}:",
    ]


def table_header(flow: Flow) -> list[str]:
    """The three column headers of a flow's property table."""
    return [
        f"Customcrm {flow.source.label} Property",
        f"Businessnxt {flow.target.label} Property",
        "Businessnxt Data Type",
    ]


_INLINE_SPECIAL = re.compile(r"([\\*`|_])")
_ENUMERATOR = re.compile(r"^(\d+|[A-Za-z]|[ivxlcdmIVXLCDM]+|#)[.)]( |$)")


def _text(value: str) -> str:
    """Escape plain text so reStructuredText shows it literally, in one line."""
    text = " ".join(value.split())
    text = _INLINE_SPECIAL.sub(r"\\\1", text)
    text = text.replace("::", r":\:")
    if text and (not text[0].isalnum() and text[0] != "\\" or _ENUMERATOR.match(text)):
        text = "\\" + text
    return text


def _wrap(text: str, width: int = 79) -> list[str]:
    """Wrap an (escaped) paragraph; never inside a word, so escapes stay intact."""
    return textwrap.wrap(text, width=width, break_long_words=False, break_on_hyphens=False)


def _heading(text: str, char: str, *, overline: bool = False) -> list[str]:
    rule = char * max(len(text), 3)
    return [rule, text, rule] if overline else [text, rule]


def _row(cells: list[str]) -> list[str]:
    first, *rest = cells
    return [f"   * - {_text(first)}", *(f"     - {_text(c)}" for c in rest)]


def _flow_section(flow: Flow) -> list[str]:
    lines: list[str] = [*_heading(_text(flow_title(flow)), "-"), ""]
    for sentence in flow_sentences(flow):
        lines += [_text(sentence), ""]
    lines += [".. list-table::", "   :header-rows: 1", ""]
    lines += _row(table_header(flow))
    rows = table_rows(flow)
    for row in rows:
        lines += _row([row.source, row.target, row.type])
    lines.append("")
    noted = [row for row in rows if row.notes]
    if noted:
        lines += ["Notes on the properties:", ""]
        for row in noted:
            lines.append(f"- {_text(row.source)} to {_text(row.target)}: {_text('; '.join(row.notes))}.")
        lines.append("")
    return lines


def render_dataflow_rst(mapping: Mapping, generated_at: datetime) -> str:
    """The whole dataflow document as reStructuredText."""
    stamp = generated_at.isoformat(sep=" ", timespec="seconds")
    lines: list[str] = [*_heading(_text(DOCUMENT_TITLE), "=", overline=True), ""]
    lines += [_text(f"Generated: {stamp}"), ""]
    lines += [*_wrap(_text(INTRODUCTION)), ""]
    for flow in mapping.flows:
        lines += _flow_section(flow)
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def render_default(path: str | Path | None = None, now: datetime | None = None) -> str:
    """Render the document for a mapping file (default: the packaged one), stamped now (UTC)."""
    return render_dataflow_rst(load_mapping(path), now or datetime.now(timezone.utc))


@dataclass(frozen=True)
class TableRow:
    """One row of a flow's property table, as the dataflow document shows it."""

    source: str  # e.g. "Name", "Lines[].LineNo", "(setting)"
    target: str  # e.g. "name", "orderLines[].lineNo"
    type: str  # the "Businessnxt Data Type" column
    notes: tuple[str, ...] = ()


def table_rows(flow: Flow) -> list[TableRow]:
    """The rows of a flow's property table (the dataflow document)."""
    rows: list[TableRow] = []
    for prop in flow.properties:
        if prop.is_lines:
            for item in prop.items or []:
                rows.append(
                    TableRow(
                        f"{prop.source}[].{item.source}",
                        f"{prop.target}[].{item.target}",
                        item.type,
                        _row_notes(flow, item, line_key=item.source == prop.key),
                    )
                )
        else:
            rows.append(
                TableRow(
                    prop.source if prop.source is not None else "(setting)",
                    prop.target,
                    prop.type,
                    _row_notes(flow, prop),
                )
            )
    return rows

def _row_notes(flow: Flow, prop: Property, *, line_key: bool = False) -> tuple[str, ...]:
    notes = []
    if flow.match and prop.source == flow.match.source and prop.setting is None:
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

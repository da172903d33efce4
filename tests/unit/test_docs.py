"""Unit tests of the dataflow document renderer (streams/docs.py).

The rendered reStructuredText is parsed with docutils (any warning fails the
test) and checked against the checklist format of docs/mapping.md and
against the mapping's properties.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

docutils_core = pytest.importorskip("docutils.core", reason="docutils is in the dev extra")
from docutils import nodes  # noqa: E402
from docutils.utils import SystemMessage  # noqa: E402

from streams.docs import DOCUMENT_TITLE, render_dataflow_rst, render_default, table_rows as flow_rows  # noqa: E402
from streams.mapping import load_mapping, parse_mapping  # noqa: E402

GENERATED_AT = datetime(2026, 11, 25, 18, 30, 5, tzinfo=timezone.utc)
MAPPING_FILE = Path(__file__).resolve().parents[2] / "schemas" / "mapping.json"

SECTIONS = [
    ("Customcrm Order to Businessnxt Order", "Order", "Order"),
    ("Customcrm Product to Businessnxt Product", "Product", "Product"),
    ("Customcrm User to Businessnxt Order", "User", "Order"),
]


def parse(text: str) -> nodes.document:
    """Parse strictly: any docutils warning or error raises."""
    doc = docutils_core.publish_doctree(
        text,
        settings_overrides={"report_level": 1, "halt_level": 2, "warning_stream": False},
    )
    assert not list(doc.findall(nodes.system_message))
    return doc


def squash(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def mapping():
    return load_mapping()


@pytest.fixture(scope="module")
def rendered(mapping):
    return render_dataflow_rst(mapping, GENERATED_AT)


@pytest.fixture(scope="module")
def doctree(rendered):
    return parse(rendered)


def top_sections(doc):
    return [n for n in doc.children if isinstance(n, nodes.section)]


def table_rows(table: nodes.table) -> tuple[list[str], list[list[str]]]:
    def cells(row):
        return [squash(entry.astext()) for entry in row.findall(nodes.entry)]

    header = [cells(r) for r in table.findall(nodes.row) if isinstance(r.parent, nodes.thead)]
    body = [cells(r) for r in table.findall(nodes.row) if isinstance(r.parent, nodes.tbody)]
    assert len(header) == 1
    return header[0], body


def test_title_generated_line_and_introduction(doctree):
    assert doctree["title"] == DOCUMENT_TITLE
    assert isinstance(doctree.children[0], nodes.title)
    assert doctree.children[0].astext() == "Customcrm to Businessnxt Dataflow"
    paragraphs = [n for n in doctree.children if isinstance(n, nodes.paragraph)]
    assert paragraphs[0].astext() == "Generated: 2026-11-25 18:30:05+00:00"
    assert len(paragraphs) >= 2 and "Customcrm" in paragraphs[1].astext() and len(paragraphs[1].astext()) > 80


def test_three_sections_in_order(doctree):
    titles = [s.children[0].astext() for s in top_sections(doctree)]
    assert titles == [title for title, _, _ in SECTIONS]


def test_section_title_is_underlined_in_the_source(rendered):
    for title, _, _ in SECTIONS:
        assert f"\n{title}\n{'-' * len(title)}\n" in rendered


@pytest.mark.parametrize("index", range(3))
def test_section_sentences(doctree, index):
    title, src, tgt = SECTIONS[index]
    section = top_sections(doctree)[index]
    paragraphs = [squash(p.astext()) for p in section.children if isinstance(p, nodes.paragraph)]
    assert paragraphs[:3] == [
        f"Every Customcrm {src} will be synchronized with a Businessnxt {tgt}.",
        f"Once a link between a Customcrm {src} and a Businessnxt {tgt} is established, it will keep in sync "
        "between the two systems, regardless of where it is edited.",
        f"The following properties are synchronized between a Customcrm {src} and a Businessnxt {tgt}:",
    ]
    # the table follows the "following properties" sentence directly
    third = [c for c in section.children if isinstance(c, nodes.paragraph)][2]
    following = section.children[section.children.index(third) + 1]
    assert isinstance(following, nodes.table)


@pytest.mark.parametrize("index", range(3))
def test_list_table_header_and_rows_equal_the_mapping(mapping, doctree, index):
    _, src, tgt = SECTIONS[index]
    flow = mapping.flows[index]
    tables = list(top_sections(doctree)[index].findall(nodes.table))
    assert len(tables) == 1
    header, body = table_rows(tables[0])
    assert header == [f"Customcrm {src} Property", f"Businessnxt {tgt} Property", "Businessnxt Data Type"]
    assert body == [[r.source, r.target, r.type] for r in flow_rows(flow)]


def test_rows_are_the_contract_rows(doctree):
    # spot checks against docs/mapping.md, independent of the mapping API
    bodies = [table_rows(next(iter(s.findall(nodes.table))))[1] for s in top_sections(doctree)]
    assert len(bodies[0]) == 11 and len(bodies[1]) == 6 and len(bodies[2]) == 5
    assert ["Lines[].UnitPrice", "orderLines[].priceInCurrency", "Decimal"] in bodies[0]
    assert bodies[1][0] == ["Sku", "productNo", "String"]
    assert bodies[2][-1] == ["(setting)", "customerNo", "Int"]
    assert bodies[2][3] == ["CreatedAt", "orderDate", "Int (date yyyymmdd)"]


def test_list_table_directive_and_header_rows_option(rendered):
    assert rendered.count(".. list-table::\n   :header-rows: 1\n") == 3


def test_notes_follow_the_table_not_as_columns(doctree):
    product = top_sections(doctree)[1]
    text = squash(product.astext())
    assert "Sku to productNo: match key; create only" in text
    user = squash(top_sections(doctree)[2].astext())
    assert "(setting) to customerNo: from the setting internal_customer_no; create only" in user
    for table in doctree.findall(nodes.table):
        assert all(len(row.children) == 3 for row in table.findall(nodes.row))


def test_special_characters_are_escaped(tmp_path):
    raw = json.loads(MAPPING_FILE.read_text("utf-8"))
    raw["flows"][1]["properties"].append(
        {"source": "Odd_*Name*_", "target": "`weird`|field_", "type": "- String::", "convert": "string",
         "note": "1. see *this* | that_"}
    )
    mapping = parse_mapping(raw)
    doc = parse(render_dataflow_rst(mapping, GENERATED_AT))
    _, body = table_rows(list(top_sections(doc)[1].findall(nodes.table))[0])
    assert body[-1] == ["Odd_*Name*_", "`weird`|field_", "- String::"]
    assert "1. see *this* | that_" in squash(top_sections(doc)[1].astext())


def test_render_default_uses_the_packaged_mapping(rendered):
    text = render_default(now=GENERATED_AT)
    assert text == rendered
    assert text.endswith("\n") and not text.endswith("\n\n")


def test_strict_parse_catches_broken_markup():
    # proves the strict settings would fail a broken document
    with pytest.raises(SystemMessage):
        parse("Title\n==\n\n.. list-table::\n   :header-rows: 1\n\n   * - a\n     - b\n   * - c\n")

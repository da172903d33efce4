"""The console script: Faust's commands plus talkstream's, and `talkstream docs`."""
from __future__ import annotations

import subprocess
import sys

import docutils.core
import docutils.nodes

from streams.docs import table_rows
from streams.mapping import load_mapping

CLI = [sys.executable, "-m", "streams.cli"]


def test_help_lists_faust_and_talkstream_commands():
    out = subprocess.run([*CLI, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("worker", "agents", "tables", "run", "sandbox", "status", "replay", "resync", "deadletters",
                    "docs"):
        assert f"\n  {command} " in out, command


def test_docs_command_prints_the_checklist_filled_from_the_mapping():
    out = subprocess.run([*CLI, "docs"], capture_output=True, text=True, check=True).stdout
    tree = docutils.core.publish_doctree(out, settings_overrides={"report_level": 2, "halt_level": 2})
    sections = [s for s in tree.findall(docutils.nodes.section)]
    titles = [s[0].astext() for s in sections]
    mapping = load_mapping()
    assert titles == [f.title for f in mapping.flows]
    for flow, section in zip(mapping.flows, sections):
        table = next(section.findall(docutils.nodes.table))
        rows = [[entry.astext() for entry in row.findall(docutils.nodes.entry)]
                for row in table.findall(docutils.nodes.row)]
        assert rows[0] == [f"Customcrm {flow.source.label} Property", f"Businessnxt {flow.target.label} Property",
                           "Businessnxt Data Type"]
        expected = [[r.source, r.target, r.type] for r in table_rows(flow)]
        assert rows[1:] == expected


def test_unknown_sandbox_system_is_a_clear_error():
    result = subprocess.run([*CLI, "sandbox", "nosuch"], capture_output=True, text=True)
    assert result.returncode == 2 and "customcrm or businessnxt" in result.stderr


def test_operations_need_a_broker_and_say_so_in_one_line(tmp_path):
    """No KAFKA_BROKER and no `talkstream run` in this folder: one line saying what to do, no
    connection errors (nothing probes a default address)."""
    env = {k: v for k, v in __import__("os").environ.items() if k != "KAFKA_BROKER"}
    env["TALKSTREAM_DATA_DIR"] = str(tmp_path / "data")
    for command in (["status"], ["replay", "--flow", "order-order"], ["deadletters"],
                    ["resync", "--system", "customcrm", "--entity", "order"]):
        result = subprocess.run([*CLI, *command], capture_output=True, text=True, env=env)
        assert result.returncode == 2, command
        assert result.stderr.strip().count("\n") == 0, result.stderr
        assert "KAFKA_BROKER" in result.stderr and "make run" in result.stderr
        assert "refused" not in result.stderr + result.stdout

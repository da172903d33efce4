"""Connectors: one package per system (client, poller, writer, webhook,
sandbox), plus ``common`` for what they all share (Kafka plumbing,
watermarks, HTTP server running, sandbox fault injection)."""

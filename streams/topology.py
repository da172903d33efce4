"""The worker's pipeline, wired on the process's Faust app (``talkstream worker`` imports this module).

::

  <system>.<entity>.changes ──▶ route ──▶ talkstream.flow.events ──▶ link ──▶ talkstream.<system>.<entity>.commands
        ▲ poll / webhook                 (keyed by link key)   ▲  (links table)              │
        │                                                      └──── results ◀── sink ◀─────┘

One module per stage in ``streams.stages`` (``poll``, ``route``, ``link``, ``sink``,
``web``); ``streams.stages.context`` declares the topics, tables and services they
share. Everything is derived from the mapping: a new flow or property needs no new
agent. A test builds the same on an app of its own (``context.build`` and a stage's
``register``).
"""
from __future__ import annotations

from streams.app import app
from streams.mapping import load_mapping
from streams.settings import get_settings
from streams.stages import context as pipeline, link, poll, route, sink, web

settings = get_settings()
context = pipeline.build(app, settings, load_mapping(settings.mapping_file))
pipeline.start_services(context)
route_agent = route.register(context)
link_stage = link.register(context)
sink_agents = sink.register(context)
polls = poll.register(context)
web.register(context, link_stage)

"""The pipeline's stages, one module each, in the order an edit goes through them.

- ``poll``: each system's changes -> ``<system>.<entity>.changes`` (leader-only timers);
- ``route``: change events -> ``talkstream.flow.events``, keyed by link key;
- ``link``: a link's messages -> the engine's decision -> its state, commands, decision record;
- ``sink``: commands -> the target system -> results back to ``link``;
- ``web``: the worker's web views (metrics, webhook, status, the console).

``context`` declares what they share (topics, tables, services) on one Faust app;
``streams.topology`` wires them for the worker.
"""

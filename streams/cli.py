"""The ``talkstream`` console script: Faust's own CLI plus talkstream's commands.

``talkstream worker`` is Faust's worker. The commands registered here are
imported by ``main()`` before handing over to ``app.main()``.
"""
from __future__ import annotations

import sys


def main() -> None:
    from streams.app import app
    import streams.commands  # noqa: F401  (registers the custom commands)

    try:
        import streams.topology  # noqa: F401  (registers agents, tables, views)
    except ImportError as exc:  # pragma: no cover - only while the engine is absent
        if exc.name != "streams.topology":
            raise
    if "worker" in sys.argv[1:]:
        _prepare_worker()
    app.main()


def _prepare_worker() -> None:
    """Create every topic before the worker's clients touch them (see streams.topics)."""
    from streams.mapping import load_mapping
    from streams.settings import get_settings
    from streams.topics import create_all

    settings = get_settings()
    try:
        create_all(settings.broker_url(), load_mapping(settings.mapping_file), settings.partitions)
    except RuntimeError as exc:
        print(f"talkstream: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


if __name__ == "__main__":  # pragma: no cover
    sys.argv[0] = "talkstream"
    main()

"""The ``talkstream`` console script: Faust's own CLI plus talkstream's commands.

``talkstream worker`` is Faust's worker. The commands registered here are
imported by ``main()`` before handing over to ``app.main()``.
"""
from __future__ import annotations

import os
import sys


def main() -> None:
    _use_uvloop()
    import streams.app
    from streams.app import app

    # only a worker sends through Faust's producer; any other command must not probe a broker
    # when the app is configured (with none running yet, `talkstream run` printed errors)
    streams.app.PRODUCES_THROUGH_FAUST = "worker" in sys.argv[1:]
    import streams.commands  # noqa: F401  (registers the custom commands)

    try:
        import streams.topology  # noqa: F401  (registers agents, tables, views)
    except ImportError as exc:  # pragma: no cover - only while the engine is absent
        if exc.name != "streams.topology":
            raise
    if "worker" in sys.argv[1:]:
        _prepare_worker()
    app.main()


def _use_uvloop() -> None:
    """Run on uvloop when it is installed and no other loop was chosen (Faust's ``-L``/``--loop``
    or ``FAUST_LOOP``): the worker spends about a quarter of its CPU in the event loop.
    Must run before Faust is imported (it picks the loop at import)."""
    chosen = os.environ.get("FAUST_LOOP") or os.environ.get("F_LOOP") or any(
        arg in ("-L", "--loop") or arg.startswith("--loop=") for arg in sys.argv[1:])
    if chosen:
        return
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return
    os.environ["FAUST_LOOP"] = "uvloop"  # read by ``import faust``; children started by ``run`` inherit it


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

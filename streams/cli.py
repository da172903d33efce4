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
    app.main()


if __name__ == "__main__":  # pragma: no cover
    sys.argv[0] = "talkstream"
    main()

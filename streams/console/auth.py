"""The console's token and the headers of every console answer.

The console is off unless ``TALKSTREAM_CONSOLE_TOKEN`` is set (``talkstream run``
makes one up when it is not). Every API call carries ``Authorization: Bearer
<token>``, compared in constant time.
"""
from __future__ import annotations

import hmac

#: Scripts, styles and calls from the console's own origin only; no inline script, no frames.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                           "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def authorized(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token`` as its bearer token (constant time)."""
    if not token or not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())

"""The console's token check and headers."""
from __future__ import annotations

from streams.console.auth import CONTENT_SECURITY_POLICY, HEADERS, authorized


def test_only_the_bearer_token_itself_is_authorized():
    assert authorized("Bearer s3cret", "s3cret")
    assert authorized("bearer s3cret", "s3cret")
    assert not authorized("Bearer s3cre", "s3cret")
    assert not authorized("Bearer s3cret-and-more", "s3cret")
    assert not authorized("Basic s3cret", "s3cret")
    assert not authorized("s3cret", "s3cret")
    assert not authorized(None, "s3cret")
    assert not authorized("Bearer ", "")  # no token configured: nothing is authorized


def test_every_answer_forbids_inline_scripts_and_frames():
    assert HEADERS["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY

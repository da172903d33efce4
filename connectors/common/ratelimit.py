"""Client-side rate limits that stay under a server's window limit.

aiolimiter's leaky bucket allows a burst of its whole capacity on top of its
drain rate, so ``AsyncLimiter(rate, period)`` lets any window of ``period``
seconds see up to twice ``rate`` requests: a server counting requests per
sliding window then answers 429. ``window_limiter`` keeps the capacity a tenth
of the rate, so a window sees at most 1.1 x rate requests (99 for 90 per 10 s
under Customcrm's 100; 594 for 540 per minute under Business NXT's 600).
"""
from __future__ import annotations

from aiolimiter import AsyncLimiter


def window_limiter(rate: float, period: float) -> AsyncLimiter:
    """At most ``rate`` requests per ``period`` seconds, with bursts of a tenth of that."""
    burst = max(1, int(rate) // 10)
    return AsyncLimiter(burst, period * burst / rate)

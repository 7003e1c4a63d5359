"""Per-person rate limits, kept in the app's process: a sliding window of recent actions per
(person, action). Keyed by account, never by address (no IP is kept)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque


class RateLimiter:
    """At most ``limit`` actions per ``window`` seconds for each key."""

    def __init__(self, limit: int, window: float = 60.0, clock=time.monotonic):
        self.limit, self.window, self._clock = limit, window, clock
        self._seen: dict[object, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def allow(self, key: object) -> bool:
        """Count one action for ``key`` if it is within the limit; False (and nothing counted) if not."""
        now = self._clock()
        with self._lock:
            seen = self._seen[key]
            while seen and now - seen[0] >= self.window:
                seen.popleft()
            if len(seen) >= self.limit:
                return False
            seen.append(now)
            return True

    def retry_after(self, key: object) -> float:
        """Seconds until ``key`` may act again (0 when it may now)."""
        with self._lock:
            seen = self._seen.get(key)
            if not seen or len(seen) < self.limit:
                return 0.0
            return max(0.0, self.window - (self._clock() - seen[0]))

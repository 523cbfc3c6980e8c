"""Retry timing for targets: exponential backoff with jitter that honours a server's Retry-After,
and a circuit breaker that stops hammering a target that keeps failing."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field


@dataclass
class RetryPolicy:
    initial: float = 0.5
    maximum: float = 60.0
    circuit_failures: int = 5
    circuit_open_seconds: float = 30.0
    attempt: int = 0
    opened_at: float | None = field(default=None)

    def next_delay(self, retry_after: float | None = None) -> float:
        """Delay before the next try, after a failure. Full jitter in [base/2, base]; Retry-After wins
        when the server sent one (capped at `maximum`, so a hostile header cannot stall us for days)."""
        self.attempt += 1
        if self.attempt >= self.circuit_failures and self.opened_at is None:
            self.opened_at = time.monotonic()
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.maximum)
        base = min(self.maximum, self.initial * (2 ** (self.attempt - 1)))
        if self.opened_at is not None:
            base = max(base, self.circuit_open_seconds)
        return random.uniform(base / 2, base)

    @property
    def circuit_open(self) -> bool:
        return self.opened_at is not None

    def success(self) -> None:
        self.attempt = 0
        self.opened_at = None

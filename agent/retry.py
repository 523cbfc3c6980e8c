"""Retry timing for targets: exponential backoff with jitter that honours a server's Retry-After,
and a circuit breaker that stops hammering a target that keeps failing.

After the n-th consecutive failure (n = 1, 2, ...) the worker waits
    base = min(maximum, initial * 2**(n-1)),  delay drawn uniformly from [base/2, base]   ("equal jitter")
so retries of many agents spread out but never come sooner than half the backoff.
- Retry-After from the server is a floor: delay = max(delay, retry_after), the header honoured up to
  RETRY_AFTER_CAP (15 minutes) or `maximum` if that is larger — a receiver asking for two minutes gets
  them, a mistaken header asking for a week does not stall delivery for a week.
- Circuit breaker: from the `circuit_failures`-th consecutive failure on the circuit is open and every
  wait is at least `circuit_open_seconds`; the next attempt after the wait is the half-open probe. One
  success closes the circuit and resets the backoff.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


RETRY_AFTER_CAP = 900.0


@dataclass
class RetryPolicy:
    initial: float = 0.5
    maximum: float = 60.0
    circuit_failures: int = 5
    circuit_open_seconds: float = 30.0
    attempt: int = 0                       # consecutive failures so far

    def bounds(self, attempt: int) -> tuple[float, float]:
        """The [low, high] delay range after the `attempt`-th consecutive failure, without Retry-After."""
        base = min(self.maximum, self.initial * (2 ** (attempt - 1)))
        low, high = base / 2, base
        if attempt >= self.circuit_failures:
            low, high = max(low, self.circuit_open_seconds), max(high, self.circuit_open_seconds)
        return low, high

    def next_delay(self, retry_after: float | None = None) -> float:
        """Delay before the next try, after a failure."""
        self.attempt += 1
        low, high = self.bounds(self.attempt)
        delay = random.uniform(low, high)
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(retry_after, max(self.maximum, RETRY_AFTER_CAP)))
        return delay

    @property
    def circuit_open(self) -> bool:
        """After circuit_failures failures in a row, retries wait circuit_open_seconds (see bounds)."""
        return self.attempt >= self.circuit_failures

    def success(self) -> None:
        self.attempt = 0

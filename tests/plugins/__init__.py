"""Pytest plugins, one per real service the suite starts; loaded by tests/conftest.py."""

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def crash_workload(n: int) -> int:
    """Changes a crash test's writers make: `n` locally, two fifths in CI (CI=true), where the suite must stay
    well under 15 minutes. The kills, which are what such a test proves, are not scaled."""
    import os
    return n if not os.environ.get("CI") else max(1000, n * 2 // 5)


def property_examples(n: int) -> int:
    """Hypothesis examples for a compiled-vs-pure property test: `n` locally, a quarter in CI (CI=true), where
    the suite must stay well under 15 minutes; CDC_PROPERTY_SCALE overrides the factor (e.g. 4 for a soak)."""
    import os
    scale = float(os.environ.get("CDC_PROPERTY_SCALE") or ("0.25" if os.environ.get("CI") else "1"))
    return max(50, int(n * scale))

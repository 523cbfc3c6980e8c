"""Secrets never reach a log. Every secret value a test hands the agent is registered with `secret()`; the
agent's in-process log lines are written to a file in the session's temp dir as well, and when the session
ends every `*.log` the suite wrote there (agent processes, in-process logging) is searched for them."""

from __future__ import annotations

import logging

import pytest

CANARIES: set[str] = set()


def secret(value: str) -> str:
    """Register `value` as a secret that must not appear in any log; returns it."""
    CANARIES.add(value)
    return value


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    handler = logging.FileHandler(base / "in-process-agent.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger()              # every module logs under its own name (getLogger(__name__))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    yield
    logger.removeHandler(handler)
    handler.close()
    logs = sorted(base.rglob("*.log"))
    leaks = [f"{f.relative_to(base)} holds {s[:3]}…" for f in logs
             for s in CANARIES if s in f.read_text(errors="replace")]
    assert not leaks, "secrets leaked into logs: " + "; ".join(leaks)

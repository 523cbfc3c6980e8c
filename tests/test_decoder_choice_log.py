"""The line saying a process decodes in pure Python (CDC_AGENT_PURE=1, or an extension not built) belongs to the
running agent's log, once; a one-shot command (`cdc-agent snapshot`, `check`, ...) keeps its stderr for its own
answer (agent/logs.py DECODER_CHOICE_LOGGERS)."""

from __future__ import annotations

import io
import logging

import pytest

from agent import fastmy, fastpath, logs


@pytest.fixture
def restored_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    for name in logs.DECODER_CHOICE_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)


def _meet_both_decoders(monkeypatch) -> None:
    monkeypatch.setattr(fastpath, "_reported", False)
    monkeypatch.setattr(fastmy, "_reported", False)
    for _ in range(2):
        assert fastpath.tuple_decoder(ValueError, object()) is None
        assert not fastmy.enabled()


@pytest.mark.parametrize("built", [True, False], ids=["pure-env", "not-built"])
def test_the_pure_path_line_is_the_running_agents_not_a_commands(monkeypatch, restored_logging, built):
    if built:
        monkeypatch.setenv(fastpath.PURE_ENV, "1")
    else:
        monkeypatch.delenv(fastpath.PURE_ENV, raising=False)
        monkeypatch.setattr(fastpath, "_fastpg", None)
        monkeypatch.setattr(fastmy, "_fastmy", None)
    command = io.StringIO()
    logs.setup(stream=command, one_shot=True)
    _meet_both_decoders(monkeypatch)
    assert command.getvalue() == ""
    agent = io.StringIO()
    logs.setup(stream=agent)                  # `cdc-agent run`
    _meet_both_decoders(monkeypatch)
    lines = agent.getvalue().splitlines()
    assert len(lines) == 2, lines             # one per decoder, each once
    assert "PostgreSQL changes in pure Python" in lines[0] and "MariaDB row images in pure Python" in lines[1]
    assert all((" warning " in ln) != built for ln in lines)     # not built: a warning; chosen: info

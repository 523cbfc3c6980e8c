"""A fixture that runs a test module once on each binlog rows decoder: the compiled core (agent/_fastmy.c)
and the generated pure-Python reference. Import it into a test module
(`from tests.mysql_decoder_paths import mysql_decoder_path`); rows decoders built during the test (directly,
by a BinlogParser, or by a source, in this process or an agent child inheriting the environment) pick the
path from CDC_AGENT_PURE."""

from __future__ import annotations

import pytest

from agent import fastmy


@pytest.fixture(autouse=True, params=["compiled", "pure"])
def mysql_decoder_path(request, monkeypatch):
    if request.param == "compiled":
        if not fastmy.compiled():
            pytest.skip("agent._fastmy is not built (no C compiler at install)")
        monkeypatch.delenv(fastmy.PURE_ENV, raising=False)
    else:
        monkeypatch.setenv(fastmy.PURE_ENV, "1")
    return request.param

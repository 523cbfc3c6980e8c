"""A fixture that runs a test module once on each tuple decoder: the compiled core (agent/_fastpg.c) and
the pure-Python reference. Import it into a test module (`from tests.decoder_paths import decoder_path`);
Decoders built during the test (directly or by a source) pick the path from CDC_AGENT_PURE."""

from __future__ import annotations

import pytest

from agent import fastpath


@pytest.fixture(autouse=True, params=["compiled", "pure"])
def decoder_path(request, monkeypatch):
    if request.param == "compiled":
        if not fastpath.compiled():
            pytest.skip("agent._fastpg is not built (no C compiler at install)")
        monkeypatch.delenv(fastpath.PURE_ENV, raising=False)
    else:
        monkeypatch.setenv(fastpath.PURE_ENV, "1")
    return request.param

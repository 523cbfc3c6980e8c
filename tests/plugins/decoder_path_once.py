"""Tests of a module that runs on both decoders (tests/decoder_paths.py, tests/mysql_decoder_paths.py) marked
`one_decoder_path` prove something the decoder does not change (a kill, a server restart, TLS, `check`): they
run once, on the compiled decoder, or on the pure one where the extension is not built. The pure path's CI
coverage is written down in docs/performance.md."""

from __future__ import annotations

from agent import fastmy, fastpath

# the parametrised fixture of each path pair, and whether its compiled side is there
_PATH_FIXTURES = {"decoder_path": fastpath.compiled, "mysql_decoder_path": fastmy.compiled}


def pytest_configure(config):
    config.addinivalue_line("markers", "one_decoder_path: run on one decoder path only (the decoder does not "
                                       "change what the test proves)")


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        once = item.get_closest_marker("one_decoder_path") is not None
        if once and any(params.get(name) == "pure" and built() for name, built in _PATH_FIXTURES.items()):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep

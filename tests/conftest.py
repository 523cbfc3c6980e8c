"""Fixtures live in tests/plugins/, one module per real service the suite starts (PostgreSQL, MariaDB,
HTTP receivers, ...); every module there is loaded."""

from pathlib import Path

pytest_plugins = sorted(
    f"tests.plugins.{p.stem}" for p in (Path(__file__).parent / "plugins").glob("*.py") if p.stem != "__init__"
)

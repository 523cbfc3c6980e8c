"""cdc-agent: change-data-capture from database logs or trigger changelogs to domain events."""

__version__ = "0.1.0"

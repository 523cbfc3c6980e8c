"""Logging: one line per event of note, text or JSON, with secrets redacted on the way out."""

from __future__ import annotations

import logging
import sys
import time

import orjson

from .secrets import redact


class _RedactingFormatter(logging.Formatter):
    def __init__(self, json_lines: bool):
        super().__init__()
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        msg = redact(record.getMessage())
        # an exception logged with its traceback is a bug: keep the traceback (redacted), it is what a fix needs
        trace = redact(self.formatException(record.exc_info)) if record.exc_info else None
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        if self.json_lines:
            line = {"time": ts, "level": record.levelname.lower(), "logger": record.name, "msg": msg}
            if trace:
                line["traceback"] = trace
            return orjson.dumps(line).decode()
        text = f"{ts} {record.levelname.lower():7} {record.name}: {msg}"
        return text + "\n" + trace if trace else text


def setup(log_format: str = "text", level: str = "info", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_RedactingFormatter(log_format == "json"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("apscheduler", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

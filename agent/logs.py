"""Logging: one line per event of note, text or JSON, with secrets redacted on the way out. A bug logged
with its exception carries the traceback (text: the lines after the message; JSON: an `exc` field)."""

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
        # a record with exc_info is a bug being reported: its traceback is what a maintainer needs
        exc = redact(self.formatException(record.exc_info)) if record.exc_info else None
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        if self.json_lines:
            out = {"time": ts, "level": record.levelname.lower(), "logger": record.name, "msg": msg}
            if exc:
                out["exc"] = exc
            return orjson.dumps(out).decode()
        line = f"{ts} {record.levelname.lower():7} {record.name}: {msg}"
        return f"{line}\n{exc}" if exc else line


# The loggers of the one line saying a process decodes in pure Python (CDC_AGENT_PURE=1, or the extension not
# built): the running agent's log says it once; a one-shot command's stderr carries only its own answer.
DECODER_CHOICE_LOGGERS = ("agent.fastpath", "agent.fastmy")


def setup(log_format: str = "text", level: str = "info", stream=None, one_shot: bool = False) -> None:
    """The process's log on stderr (or `stream`). `one_shot`: a command that answers and exits (not `run`)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_RedactingFormatter(log_format == "json"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("apscheduler", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in DECODER_CHOICE_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR if one_shot else logging.NOTSET)

"""Every error the agent raises, as one tree. Driver exceptions are translated at the source and
target boundaries into these, so the pipeline decides retry-or-not by reading `retriable`.

CdcError
├── ConfigError             bad config file or argument                      (exit 2)
├── SourceError
│   ├── SourceUnavailable   database down, connection lost       retriable
│   └── SourceFatal         slot gone, binlog purged, no privilege  not retriable
├── TargetError
│   ├── TargetUnavailable   refused, timeout, 5xx, 429                retriable (may carry retry_after)
│   └── TargetRejected      the target refused these events for good  not retriable
├── MappingError            a row the rules cannot turn into an event (goes to dead letters)
└── SpoolError              the local state store is unusable
"""

from __future__ import annotations


class CdcError(Exception):
    retriable = False


class ConfigError(CdcError):
    def __init__(self, file: str, key: str | None, problem: str):
        self.file, self.key, self.problem = file, key, problem
        where = f"{file}: {key}: " if key else f"{file}: "
        super().__init__(where + problem)


class SourceError(CdcError):
    pass


class SourceUnavailable(SourceError):
    retriable = True


class SourceFatal(SourceError):
    retriable = False


class PositionLost(SourceFatal):
    """The log no longer holds the checkpoint (slot dropped, binlog purged): `snapshot = "when_needed"`
    starts again from now with a snapshot; otherwise it needs a person."""


class TargetError(CdcError):
    pass


class TargetUnavailable(TargetError):
    retriable = True

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class TargetRejected(TargetError):
    retriable = False


class MappingError(CdcError):
    pass


class SpoolError(CdcError):
    pass

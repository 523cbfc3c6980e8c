"""`[connect]` (CONTRACT §8), declared in the agent/options.py vocabulary; `cdc-agent connect` is agent/connect.py."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .options import OptionError, Url, option


@dataclass(frozen=True)
class ConnectOptions:
    url: Url = option(schemes=("http", "https"), help="the Kafka Connect REST API")
    name: str | None = option(None, help="the connector's name; default the agent's name")
    options: dict[str, str] = option({}, help="extra connector config, passed through")
    secrets: str = option("env", help='how the connector gets the password: "env" (EnvVarConfigProvider) or '
                                      '"file:/path" (a properties file on the workers, FileConfigProvider)')

    def __post_init__(self):
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9._-]+", self.name):
            raise OptionError("name", f"must be a connector name of letters, digits, '.', '_', '-', got {self.name!r}")
        for k, v in self.options.items():
            # the config goes to Connect's REST API, which shows it to anyone who GETs it: a secret must be a
            # config-provider reference
            if re.search(r"(?i)password|secret", k) and not re.fullmatch(r"\$\{[a-z]+:[^}]+\}", v):
                raise OptionError(f"options.{k}", "must be a Connect config-provider reference like ${env:NAME} "
                                                  "or ${file:/path:NAME}, never the secret itself")
        if self.secrets != "env" and not (self.secrets.startswith("file:/") and len(self.secrets) > 6):
            raise OptionError("secrets", f'must be "env" or "file:/path", got {self.secrets!r}')

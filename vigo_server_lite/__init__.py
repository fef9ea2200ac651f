"""Vigo server lite: fleet CA, join tokens, enrollment, envoy registry and check-in.

Public surface::

    ServerConfig, build_config        -- typed config (flags > server.yaml > defaults)
    ServerLite                         -- the service: ``port = await nursery.start(s.run)``
    DataPaths                          -- where the data dir keeps the CA, TLS, token, db
    ServerLiteError, ConfigError, SetupError, Refusal   -- see ``errors``

Modules: ``tokens``, ``validation`` and ``registry`` are pure (no IO, no clock);
``db`` owns SQLite; ``datadir`` prepares the data dir; ``api`` and ``openapi`` are the
HTTP surface; ``server`` wires it onto ``vigo_swarm.http11.HTTPSServer``.
"""

from .config import ServerConfig, build_config
from .datadir import DataPaths
from .errors import ConfigError, Refusal, ServerLiteError, SetupError
from .server import ServerLite

__all__ = [
    "ConfigError",
    "DataPaths",
    "Refusal",
    "ServerConfig",
    "ServerLite",
    "ServerLiteError",
    "SetupError",
    "build_config",
]

"""Vigo server lite: fleet CA, join tokens, enrollment, envoy registry and check-in,
and the filecast authority (signed manifest records, the seed directory).

Public surface::

    ServerConfig, build_config        -- typed config (flags > server.yaml > defaults)
    ServerLite                         -- the service: ``port = await nursery.start(s.run)``
    DataPaths                          -- where the data dir keeps the CA, TLS, token, db
    ServerLiteError, ConfigError, SetupError, Refusal   -- see ``errors``

Modules: ``tokens``, ``validation``, ``registry``, ``filecast`` and ``filecast_status``
are pure (no IO, no clock); ``db`` (with ``filecast_db``) owns SQLite; ``datadir``
prepares the data dir; ``authority`` is the server's manifest and signer, ``seed`` its
seed directory; ``api``, ``filecast_api``, ``openapi`` and ``openapi_swarm`` are the
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

"""Where an envoy keeps its state. Every path derives from one state dir (default
``/var/lib/vigo``) so that many envoys can share one machine in tests and netlab."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STATE_DIR = Path("/var/lib/vigo")


def default_state_dir() -> Path:
    return Path(os.environ.get("VIGO_STATE_DIR", str(DEFAULT_STATE_DIR)))


@dataclass(frozen=True, slots=True)
class StatePaths:
    root: Path

    @property
    def identity_dir(self) -> Path:
        return self.root / "identity"

    @property
    def key(self) -> Path:  # 0600, never leaves the host
        return self.identity_dir / "key.pem"

    @property
    def cert(self) -> Path:
        return self.identity_dir / "cert.pem"

    @property
    def ca(self) -> Path:
        return self.identity_dir / "ca.pem"

    @property
    def envoy_json(self) -> Path:  # uuid, hostname, server_url, authority key, enrolled_at
        return self.identity_dir / "envoy.json"

    @property
    def agent_yaml(self) -> Path:
        return self.root / "agent.yaml"

    @property
    def control_socket(self) -> Path:
        return self.root / "control.sock"

    @property
    def swarm_dir(self) -> Path:
        return self.root / "swarm"

    @property
    def revocations_json(self) -> Path:  # last revocation list from check-in
        return self.root / "revocations.json"

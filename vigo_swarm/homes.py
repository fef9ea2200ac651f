"""Where a person's home is, for the subsystems that work in it (puddle, longdrawer).

The passwd database says, unless the envoy's ``home_root`` is set (tests, netlab: many
envoys on one machine, each with its own homes): then bob's home is
``<home_root>/bob``.
"""

from __future__ import annotations

import pwd
from pathlib import Path


def home_of(entry: pwd.struct_passwd, home_root: str) -> Path:
    """The home directory of the passwd ``entry`` (``home_root`` "" = passwd's)."""
    return Path(home_root) / entry.pw_name if home_root else Path(entry.pw_dir)

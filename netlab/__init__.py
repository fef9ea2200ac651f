"""netlab — many Vigo hosts on one machine, as network namespaces on a private bridge.

Public surface (everything else is private)::

    Lab.create(envoys, *, rate_mbit=None, with_server=True, root_dir=None) -> Lab
    Lab.attach(lab_id=None) / Lab.cleanup_stale() / Lab.down_all()
    lab.exec / spawn / kill / kill9 / is_running / pids / log_tail
    lab.set_rate / cut / restore / block / unblock / drop_multicast / allow_multicast
    lab.mount_tmpfs / resize_tmpfs   (a host's state dir on a small tmpfs: disk-full tests)
    lab.down()                    (also: ``with Lab.create(...) as lab``, and at exit)
    Host                          name, namespace, address, state_dir, log_file, bridge_port
    wait_for(predicate, timeout_s, what)
    netlab.fleet.Fleet            the Vigo server + envoys on top of a Lab

Exceptions (see ``_errors``)::

    NetlabError
    ├── NotRoot
    ├── CommandError
    └── WaitTimeout (also a TimeoutError)

Command line: ``python -m netlab up|exec|list|down|demo`` (see ``--help``).
"""

from ._errors import (
    ROOT_REASON,
    CommandError,
    NetlabError,
    NotRoot,
    WaitTimeout,
    is_root,
    require_root,
)
from ._lab import Lab
from ._topology import SUBNET, Host
from ._wait import wait_for

__all__ = [
    "ROOT_REASON",
    "SUBNET",
    "CommandError",
    "Host",
    "Lab",
    "NetlabError",
    "NotRoot",
    "WaitTimeout",
    "is_root",
    "require_root",
    "wait_for",
]

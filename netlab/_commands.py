"""The command lines that build and shape a lab: pure argv/script builders, no IO.

Keeping them pure means the exact ``ip``/``tc``/``nft`` invocations are unit-tested
without root, and ``_lab`` only decides *when* to run them. Every command addresses its
namespace explicitly (``ip -n``, ``tc -n``, ``ip netns exec``): nothing here may touch
the root network namespace except ``ip netns add``/``del``. The one filesystem change is
a tmpfs mounted on a host's state dir (``mount_tmpfs``): a small disk to fill.

Partitions are nftables tables inside host namespaces, one table per purpose, so that
healing is deleting that one table and the purposes never interfere:

- ``vgl_cut``        drop everything except loopback (``cut``/``restore``);
- ``vgl_mcast``      drop 224.0.0.0/4 in and out (``drop_multicast``/``allow_multicast``);
- ``vgl_block_<h>``  drop traffic to and from host ``h``'s address (``block``/``unblock``).

Each script starts with ``add table`` + ``delete table`` so that applying it twice
replaces rather than duplicates (nft 1.0.6 has no ``destroy``), atomically.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._topology import BRIDGE, HOST_IFACE, MULTICAST_NET, PREFIX_LEN, Host, check_host_name

Argv = list[str]

CUT_TABLE = "vgl_cut"
MCAST_TABLE = "vgl_mcast"
_BLOCK_PREFIX = "vgl_block_"
NFT_FAMILY = "inet"


# -- namespaces and links ------------------------------------------------------------


def netns_add(namespace: str) -> Argv:
    return ["ip", "netns", "add", namespace]


def netns_delete(namespace: str) -> Argv:
    return ["ip", "netns", "delete", namespace]


def netns_list() -> Argv:
    return ["ip", "netns", "list"]


def netns_pids(namespace: str) -> Argv:
    return ["ip", "netns", "pids", namespace]


def as_user(user: str, group: str) -> Argv:
    """Prefix that drops root to ``user`` *after* ``ip netns exec`` has entered the
    namespace (entering needs root, so the order matters)."""
    return ["setpriv", f"--reuid={user}", f"--regid={group}", "--init-groups", "--"]


def netns_exec(namespace: str, argv: Sequence[str], *, user_prefix: Sequence[str] = ()) -> Argv:
    if not argv:
        raise ValueError("empty command")
    return ["ip", "netns", "exec", namespace, *user_prefix, *argv]


def bridge_setup(bridge_ns: str) -> list[Argv]:
    """The bridge, with multicast snooping off so multicast floods to every port
    (with snooping on, the bridge only forwards groups it saw IGMP joins for)."""
    return [
        ["ip", "-n", bridge_ns, "link", "set", "lo", "up"],
        ["ip", "-n", bridge_ns, "link", "add", BRIDGE, "type", "bridge", "mcast_snooping", "0"],
        ["ip", "-n", bridge_ns, "link", "set", BRIDGE, "up"],
    ]


def host_setup(host: Host, bridge_ns: str) -> list[Argv]:
    """Plug a host into the bridge. The veth pair is created inside the bridge namespace
    with its peer born directly in the host namespace as ``eth0``, so no interface ever
    appears in the root namespace (where ``eth0`` usually exists already)."""
    ns = host.namespace
    veth = ["ip", "-n", bridge_ns, "link", "add", host.bridge_port, "type", "veth"]
    return [
        [*veth, "peer", "name", HOST_IFACE, "netns", ns],
        ["ip", "-n", bridge_ns, "link", "set", host.bridge_port, "master", BRIDGE],
        ["ip", "-n", bridge_ns, "link", "set", host.bridge_port, "up"],
        ["ip", "-n", ns, "link", "set", "lo", "up"],
        ["ip", "-n", ns, "addr", "add", f"{host.address}/{PREFIX_LEN}", "dev", HOST_IFACE],
        ["ip", "-n", ns, "link", "set", HOST_IFACE, "up"],
        # Without a default route, multicast needs its own route to pick an interface.
        ["ip", "-n", ns, "route", "add", MULTICAST_NET, "dev", HOST_IFACE],
    ]


# -- rate limits ---------------------------------------------------------------------


def tbf_burst_bytes(rate_mbit: float) -> int:
    """Bucket size: 10 ms worth of traffic, at least 16 kB.

    tbf needs a burst of at least rate/HZ and at least one MTU-sized (or GSO) packet;
    10 ms keeps the shaped rate close to the target at every rate we use (1 to 1000 mbit).
    """
    return max(16_000, int(rate_mbit * 1_000_000 / 8 / 100))


def tbf_replace(namespace: str, dev: str, rate_mbit: float) -> Argv:
    if not rate_mbit > 0:
        raise ValueError(f"rate must be positive, got {rate_mbit} mbit/s")
    kbit = max(1, round(rate_mbit * 1000))
    return [
        "tc", "-n", namespace, "qdisc", "replace", "dev", dev, "root", "tbf",
        "rate", f"{kbit}kbit", "burst", str(tbf_burst_bytes(rate_mbit)), "latency", "100ms",
    ]  # fmt: skip


def tbf_delete(namespace: str, dev: str) -> Argv:
    return ["tc", "-n", namespace, "qdisc", "del", "dev", dev, "root"]


def qdisc_show(namespace: str, dev: str) -> Argv:
    return ["tc", "-n", namespace, "qdisc", "show", "dev", dev]


def rate_commands(host: Host, bridge_ns: str, rate_mbit: float | None) -> list[Argv]:
    """Shape both directions: the host's egress on ``eth0``, and its ingress as the egress
    of its bridge port (shaping ingress directly would need ifb; this needs nothing)."""
    if rate_mbit is None:
        return [tbf_delete(host.namespace, HOST_IFACE), tbf_delete(bridge_ns, host.bridge_port)]
    return [
        tbf_replace(host.namespace, HOST_IFACE, rate_mbit),
        tbf_replace(bridge_ns, host.bridge_port, rate_mbit),
    ]


# tc says this when asked to delete a root qdisc that was never set: not an error for us.
TBF_ABSENT_MARKERS = ("handle of zero", "No such file or directory")


# -- nftables ------------------------------------------------------------------------


def nft_apply(namespace: str) -> Argv:
    """Run an nft script given on stdin inside ``namespace`` (one atomic transaction)."""
    return netns_exec(namespace, ["nft", "-f", "-"])


def block_table(peer: str) -> str:
    return f"{_BLOCK_PREFIX}{check_host_name(peer)}"


def _replace_table(table: str, input_rules: Sequence[str], output_rules: Sequence[str]) -> str:
    def chain(hook: str, rules: Sequence[str]) -> str:
        body = "".join(f"    {rule}\n" for rule in rules)
        return (
            f"  chain {hook} {{\n"
            f"    type filter hook {hook} priority 0; policy accept;\n{body}  }}\n"
        )

    return (
        f"add table {NFT_FAMILY} {table}\n"
        f"delete table {NFT_FAMILY} {table}\n"
        f"table {NFT_FAMILY} {table} {{\n"
        f"{chain('input', input_rules)}{chain('output', output_rules)}}}\n"
    )


def nft_delete_table(table: str) -> str:
    """Delete a table whether or not it exists (idempotent heal)."""
    return f"add table {NFT_FAMILY} {table}\ndelete table {NFT_FAMILY} {table}\n"


def nft_cut() -> str:
    """Drop every packet except on loopback: the host is alive but unplugged.

    Chosen over link down because link down flushes the host's routes (the multicast
    route would have to be re-added) and makes the veth's carrier flap; a drop table
    leaves the host's interfaces and routes exactly as they were, and a dropped packet
    looks like a partition to the peers (timeouts, not refusals).
    """
    return _replace_table(CUT_TABLE, ['iifname != "lo" drop'], ['oifname != "lo" drop'])


def nft_block(peer: str, peer_address: str) -> str:
    return _replace_table(
        block_table(peer), [f"ip saddr {peer_address} drop"], [f"ip daddr {peer_address} drop"]
    )


def nft_drop_multicast() -> str:
    return _replace_table(
        MCAST_TABLE, [f"ip daddr {MULTICAST_NET} drop"], [f"ip daddr {MULTICAST_NET} drop"]
    )


# -- small state filesystems ---------------------------------------------------------


def mount_tmpfs(path: str, size_mib: int) -> Argv:
    """A tmpfs of ``size_mib`` MiB on ``path``: a disk that fills up quickly."""
    return ["mount", "-t", "tmpfs", "-o", f"size={_mib(size_mib)}m,mode=0755", "tmpfs", path]


def remount_tmpfs(path: str, size_mib: int) -> Argv:
    """Grow or shrink a tmpfs in place (it keeps its files)."""
    return ["mount", "-o", f"remount,size={_mib(size_mib)}m", path]


def umount(path: str, *, lazy: bool = False) -> Argv:
    return ["umount", *(["--lazy"] if lazy else []), path]


def _mib(size_mib: int) -> int:
    if isinstance(size_mib, bool) or not isinstance(size_mib, int) or size_mib < 1:
        raise ValueError(f"a tmpfs size must be a whole number of MiB >= 1, got {size_mib!r}")
    return size_mib

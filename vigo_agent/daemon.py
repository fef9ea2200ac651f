"""``vigo agent run``: the envoy daemon's nursery tree.

    root nursery
    ├── SwarmNode            peer channel (TCP 1531, mTLS), multicast discovery, prober
    ├── ManifestGossip       keeps the manifest equal across envoys (peer channel)
    ├── FilecastService      fetches blobs the manifest names, materializes files/
    ├── SidecarScanner       (a seeder) NAME + NAME.swarm in seed_dirs → published
    ├── CheckinService       reports to the server lite; feeds hints and revocations
    ├── PuddleService        people's puddles: unlocked keys, peer-pair, member-list sync
    ├── GitbackService       people's ~/gitback repos → bundles; mirrors of allowed peers'
    ├── LongdrawerService    people's ~/longdrawer/ in sync (when longdrawer_enabled)
    ├── LockboxService       people's ~/lockbox: age-encrypted records and blobs, members only
    ├── ControlServer        unix socket for the CLI (SO_PEERCRED)
    └── signal watcher       SIGTERM/SIGINT → cancel everything, exit within 5 s

Every service is started with ``nursery.start`` and is ready when it returns; the
daemon logs "ready" only when all are. A restart reuses the identity on disk.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import trio

from vigo_swarm import DiscoveryConfig, NodeIdentity, SwarmConfig, SwarmNode, TableConfig
from vigo_swarm.filecast import FilecastService
from vigo_swarm.gitback.service import GitbackConfig, GitbackService
from vigo_swarm.gossip import ManifestGossip
from vigo_swarm.lockbox import LockboxConfig, LockboxService
from vigo_swarm.longdrawer import LongdrawerConfig, LongdrawerService
from vigo_swarm.manifest_store import ManifestStore
from vigo_swarm.node import vars_of
from vigo_swarm.puddle import PuddleService
from vigo_swarm.ratelimit import Limiter
from vigo_swarm.transfer import TransferConfig

from .checkin import CheckinService
from .config import AgentConfig, load_config
from .control import Caller, ControlServer
from .gitback_ops import people_by_name, register_gitback_ops
from .identity import EnvoyIdentity, load_identity
from .paths import StatePaths
from .puddle_ops import person_resolver, register_puddle_ops
from .sidecars import SidecarScanner

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 4.0


def swarm_config(cfg: AgentConfig, checkin_interval_s: float) -> SwarmConfig:
    """Pure: agent.yaml → the swarm's config. Peers outlive a few missed hints."""
    expire = cfg.peer_expire_s or max(3 * cfg.announce_interval_s, 2.5 * checkin_interval_s)
    return SwarmConfig(
        listen_address=cfg.listen_address,
        port=cfg.port,
        advertise_addresses=cfg.advertise_addresses,
        multicast_enabled=cfg.multicast_enabled,
        server_hints_enabled=cfg.server_hints_enabled,
        discovery=DiscoveryConfig(
            group=cfg.multicast_group,
            port=cfg.multicast_port,
            interface_address=cfg.multicast_interface,
            announce_interval_s=cfg.announce_interval_s,
        ),
        table=TableConfig(confirm_ttl_s=cfg.peer_confirm_ttl_s, expire_s=expire),
    )


class Daemon:
    def __init__(self, paths: StatePaths, config: AgentConfig, identity: EnvoyIdentity) -> None:
        self.paths = paths
        self.config = config
        self.identity = identity
        interval = config.checkin_interval_s or identity.checkin_interval_s
        self.node = SwarmNode(
            NodeIdentity(identity.uuid, identity.hostname, paths.cert, paths.key, paths.ca),
            swarm_config(config, interval),
        )
        paths.swarm_dir.mkdir(parents=True, exist_ok=True)
        # The operator authority: records it signed are the only ones envoys merge.
        authority = {"server": bytes.fromhex(identity.authority_public_key)}
        self.manifest = ManifestStore(paths.swarm_dir / "manifest.db", authority)
        for problem in self.manifest.load_errors:
            log.warning("manifest: dropped a stored record: %s", problem)
        self.gossip = ManifestGossip(self.node, self.manifest)
        seed_dirs = tuple(Path(d) for d in config.seed_dirs)
        self.filecast = FilecastService(
            self.node,
            self.gossip,
            paths.swarm_dir,
            seed_dirs=seed_dirs,
            transfer=TransferConfig(fetch_limit=Limiter(config.fetch_limit_mbit or None)),
            serve_limit=Limiter(config.serve_limit_mbit or None),
        )
        people = people_by_name(config.home_root)
        self.gitback = GitbackService(
            self.node,
            paths.swarm_dir / "gitback",
            people,
            GitbackConfig(
                scan_interval_s=config.gitback_scan_s, pull_interval_s=config.gitback_pull_s
            ),
        )
        self.checkin = CheckinService(
            node=self.node,
            server_url=identity.server_url,
            ca_file=paths.ca,
            cert_file=paths.cert,
            key_file=paths.key,
            revocations_file=paths.revocations_json,
            interval_s=interval,
            interval_fixed=bool(config.checkin_interval_s),
            backoff_max_s=config.checkin_backoff_max_s,
            gossip=self.gossip,
            progress=self.filecast.status,
            on_gitback=self.gitback.set_policy,
        )
        self.sidecars: SidecarScanner | None = None
        if seed_dirs:
            self.sidecars = SidecarScanner(
                seed_dirs,
                self.checkin,
                self.gossip,
                rescan_s=config.seed_rescan_s,
                settle_s=config.seed_settle_s,
            )
            self.filecast.seed_file = self.sidecars.file_for
        socket_path = Path(config.control_socket) if config.control_socket else paths.control_socket
        self.control = ControlServer(socket_path)
        self.control.register("status", self._op_status)
        self.control.register("peers", self._op_peers)
        self.control.register("checkin", self._op_checkin)
        self.puddle = PuddleService(
            self.node, paths.swarm_dir / "puddles.json", person_resolver(config.home_root)
        )
        register_puddle_ops(self.control, self.puddle)
        register_gitback_ops(self.control, self.gitback, people)
        self.longdrawer = longdrawer_service(self.node, paths, config)
        if self.longdrawer is not None:
            self.control.register("longdrawer_status", self._op_longdrawer_status)
        self.lockbox = LockboxService(
            self.node,
            self.puddle,
            paths.swarm_dir / "lockbox",
            LockboxConfig(
                rescan_s=config.lockbox_rescan_s, sync_interval_s=config.lockbox_sync_interval_s
            ),
        )
        self.control.register("lockbox.status", self._op_lockbox_status)
        self.started_unix = time.time()

    async def _op_status(self, caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        return {
            **self.node.status(),
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_unix, 1),
            "server_url": self.identity.server_url,
            "checkin": vars_of(self.checkin.stats),
            "manifest": {"records": len(self.manifest.manifest), **vars_of(self.gossip.stats)},
            "filecast": self.filecast.status(),
            "blob_serving": vars_of(self.filecast.blob_server.stats),
            "sidecars": self.sidecars.status() if self.sidecars else [],
            "gitback": self.gitback.status(),
            "caller": {"uid": caller.uid, "gid": caller.gid, "pid": caller.pid},
        }

    async def _op_lockbox_status(self, caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        return await self.lockbox.status(caller.uid)  # the caller's own lockbox only

    async def _op_peers(self, caller: Caller, args: dict[str, Any]) -> list[dict[str, Any]]:
        views = self.node.peers(include_candidates=bool(args.get("all")))
        return [{**asdict(v), "uuid": str(v.uuid)} for v in views]

    async def _op_checkin(self, caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        if not caller.is_root:
            from .control import ControlError

            raise ControlError("permission", "only root may trigger a check-in")
        self.checkin.trigger()
        return {"triggered": True}

    async def _op_longdrawer_status(self, caller: Caller, args: dict[str, Any]) -> Any:
        # Per person: a person sees only their own folder; root sees everyone's.
        assert self.longdrawer is not None
        return self.longdrawer.status(None if caller.is_root else caller.uid)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self.manifest:  # closed on the way out, also when cancelled
            try:
                await self._run(task_status)
            finally:
                if self.longdrawer is not None:
                    self.longdrawer.close()

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(self.node.run)
            await nursery.start(self.gossip.run)
            await nursery.start(self.filecast.run)
            await nursery.start(self.checkin.run)
            await nursery.start(self.puddle.run)
            await nursery.start(self.gitback.run)
            if self.sidecars is not None:
                await nursery.start(self.sidecars.run)
            if self.longdrawer is not None:
                await nursery.start(self.longdrawer.run)
            await nursery.start(self.lockbox.run)
            await nursery.start(self.control.run)
            log.info(
                "envoy %s (%s) ready: peer channel on port %d, control socket %s",
                self.identity.hostname,
                self.identity.uuid,
                port,
                self.control.path,
            )
            task_status.started()


def longdrawer_service(
    node: SwarmNode, paths: StatePaths, cfg: AgentConfig
) -> LongdrawerService | None:
    """The longdrawer service when agent.yaml enables it, else None."""
    if not cfg.longdrawer_enabled:
        return None
    return LongdrawerService(
        node,
        paths.root,
        LongdrawerConfig(
            group=cfg.longdrawer_multicast_group,
            port=cfg.longdrawer_multicast_port,
            interface_address=cfg.multicast_interface,
            announce_interval_s=cfg.announce_interval_s,
            rescan_interval_s=cfg.longdrawer_rescan_interval_s,
            home_root=cfg.home_root,
        ),
    )


async def run_daemon(state_dir: Path, config_path: Path | None = None) -> None:
    """Run until SIGTERM/SIGINT; then cancel everything with a grace deadline."""
    paths = StatePaths(state_dir)
    config = load_config(config_path or paths.agent_yaml)
    identity = load_identity(paths)
    daemon = Daemon(paths, config, identity)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            async for signum in signals:
                log.info("received %s: shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                # anything that ignores cancellation past the grace period is abandoned
                nursery.cancel_scope.deadline = trio.current_time() + SHUTDOWN_GRACE_S
                break

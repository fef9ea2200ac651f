"""Helper process for bench/transfer.py: one envoy node serving a blob over the peer
channel. argv: STATE_DIR ADDRESS BLOB_FILE CHUNK_BYTES READY_FILE"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from vigo_agent.identity import load_identity
from vigo_agent.paths import StatePaths
from vigo_swarm import DiscoveryConfig, NodeIdentity, SwarmConfig, SwarmNode
from vigo_swarm.blobstore import BlobStore
from vigo_swarm.transfer import register_blob_routes


async def main() -> None:
    state, addr, blob, chunk, ready = sys.argv[1:6]
    paths = StatePaths(Path(state))
    ident = load_identity(paths)
    node = SwarmNode(
        NodeIdentity(ident.uuid, ident.hostname, paths.cert, paths.key, paths.ca),
        SwarmConfig(
            listen_address=addr,
            port=0,
            advertise_addresses=(addr,),
            multicast_enabled=False,
            discovery=DiscoveryConfig(port=1),
        ),
    )
    store = BlobStore(paths.swarm_dir)
    info = await trio.to_thread.run_sync(store.add_file, blob, int(chunk))
    register_blob_routes(node, store)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(node.run)
        Path(ready).write_text(f"{port} {ident.uuid} {info.to_json().decode()}")


if __name__ == "__main__":
    trio.run(main)

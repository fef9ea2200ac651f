"""Blob transfer between real nodes on loopback mTLS: multi-source fetch, a corrupt
peer caught per chunk and penalized, resume without refetching verified chunks."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from fleet_helpers import loopback_node, make_envoy

from vigo_server_lite.ca import FleetCA
from vigo_swarm import DiscoveryConfig, ServerHint, SwarmConfig, SwarmNode
from vigo_swarm.blobstore import BlobInfo, BlobStore, describe_file
from vigo_swarm.transfer import Fetcher, TransferConfig, register_blob_routes

pytestmark = pytest.mark.integration
CHUNK = 64 * 1024


class CorruptStore(BlobStore):
    """A test peer that serves every chunk with one byte flipped."""

    def read_chunk(self, sha256: str, index: int) -> bytes:
        data = bytearray(super().read_chunk(sha256, index))
        data[len(data) // 2] ^= 0xFF
        return bytes(data)


async def start(
    ca: FleetCA, tmp: Path, nursery: trio.Nursery, n: int, store_cls: type[BlobStore] = BlobStore
) -> tuple[SwarmNode, BlobStore]:
    env = make_envoy(ca, tmp, f"t{n}")
    node = loopback_node(env, n, None)
    store = store_cls(tmp / f"t{n}" / "swarm")
    register_blob_routes(node, store)
    await nursery.start(node.run)
    return node, store


def introduce(nodes: list[SwarmNode]) -> None:
    hints = [
        ServerHint(n.identity.uuid, n.identity.hostname, (n.config.listen_address,), n.port)
        for n in nodes
    ]
    for n in nodes:
        n.add_server_hints(hints)


async def wait_until(pred, what: str, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout_s):
        while not pred():
            await trio.sleep(0.02)


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, BlobInfo]:
    f = tmp_path / "source.bin"
    f.write_bytes(os.urandom(40 * CHUNK + 123))
    return f, describe_file(f, CHUNK)


async def test_two_receivers_fetch_from_the_seed_and_each_other(
    tmp_path: Path, nursery: trio.Nursery, source: tuple[Path, BlobInfo]
) -> None:
    ca = FleetCA.load_or_create(tmp_path / "ca")
    (seed, seed_store), (a, a_store), (b, b_store) = [
        await start(ca, tmp_path, nursery, 80 + i) for i in range(3)
    ]
    introduce([seed, a, b])
    await wait_until(lambda: all(len(n.peers()) == 2 for n in (seed, a, b)), "peers")
    path, info = source
    seed_store.add_file(path, CHUNK)
    fetchers = [
        Fetcher(a, a_store, info, TransferConfig(refresh_have_s=0.1)),
        Fetcher(b, b_store, info, TransferConfig(refresh_have_s=0.1)),
    ]
    results: list[Path] = []

    async def run(f: Fetcher) -> None:
        results.append(await f.fetch())

    async with trio.open_nursery() as inner:
        for f in fetchers:
            inner.start_soon(run, f)
    want = hashlib.sha256(path.read_bytes()).hexdigest()
    for p in results:
        assert hashlib.sha256(p.read_bytes()).hexdigest() == want
    for f in fetchers:
        assert f.progress.have_chunks == info.num_chunks and f.progress.bad_chunks == 0


async def test_a_corrupt_peer_is_caught_per_chunk_and_the_blob_still_completes(
    tmp_path: Path, nursery: trio.Nursery, source: tuple[Path, BlobInfo]
) -> None:
    ca = FleetCA.load_or_create(tmp_path / "ca")
    good, good_store = await start(ca, tmp_path, nursery, 90)
    bad, bad_store = await start(ca, tmp_path, nursery, 91, CorruptStore)
    me, my_store = await start(ca, tmp_path, nursery, 92)
    introduce([good, bad, me])
    await wait_until(lambda: len(me.peers()) == 2, "peers")
    path, info = source
    good_store.add_file(path, CHUNK)
    bad_store.add_file(path, CHUNK)
    fetcher = Fetcher(me, my_store, info, TransferConfig(refresh_have_s=0.1))
    done = await fetcher.fetch()
    assert done.read_bytes() == path.read_bytes()
    assert fetcher.progress.bad_chunks >= 1
    assert fetcher.progress.sources.get(str(bad.identity.uuid), 0) == 0  # nothing accepted


async def test_resume_fetches_only_the_missing_chunks(
    tmp_path: Path, nursery: trio.Nursery, source: tuple[Path, BlobInfo]
) -> None:
    ca = FleetCA.load_or_create(tmp_path / "ca")
    seed, seed_store = await start(ca, tmp_path, nursery, 95)
    me, _ = await start(ca, tmp_path, nursery, 96)
    introduce([seed, me])
    await wait_until(lambda: len(me.peers()) == 1, "peers")
    path, info = source
    seed_store.add_file(path, CHUNK)
    # a previous run (a crashed daemon) verified the first 25 chunks
    earlier = BlobStore(tmp_path / "t96" / "swarm")
    partial = earlier.begin(info)
    data = path.read_bytes()
    for i in range(25):
        partial.write_chunk(i, data[i * CHUNK : (i + 1) * CHUNK])
    resumed = BlobStore(tmp_path / "t96" / "swarm")  # a fresh process's view of the disk
    fetcher = Fetcher(me, resumed, info, TransferConfig(refresh_have_s=0.1))
    done = await fetcher.fetch()
    assert done.read_bytes() == data
    assert fetcher.progress.have_chunks == info.num_chunks
    assert sum(fetcher.progress.sources.values()) == info.num_chunks - 25


async def test_a_peer_that_cuts_responses_short_never_breaks_the_fetch(
    tmp_path: Path, nursery: trio.Nursery, source: tuple[Path, BlobInfo]
) -> None:
    """Regression: a worker's connection error used to escape as an ExceptionGroup and
    take the whole daemon down. Now it ends only that peer's loop."""
    from vigo_swarm import http11

    ca = FleetCA.load_or_create(tmp_path / "ca")
    good, good_store = await start(ca, tmp_path, nursery, 85)
    env = make_envoy(ca, tmp_path, "cutter")
    cutter = SwarmNode(
        env.node_identity,
        SwarmConfig(
            listen_address="127.0.0.86",
            port=0,
            advertise_addresses=("127.0.0.86",),
            multicast_enabled=False,
            discovery=DiscoveryConfig(port=1),
        ),
    )
    path, info = source
    full = BlobStore(tmp_path / "cutter-store")
    full.add_file(path, CHUNK)

    async def have(request: http11.Request) -> http11.Response:
        return http11.Response(body=full.have(info.sha256) or b"", content_type="x")

    async def chunk(request: http11.Request) -> http11.Response:
        data = full.read_chunk(info.sha256, int(request.params["index"]))

        async def half() -> AsyncIterator[bytes]:
            yield data[: len(data) // 2]

        return http11.Response(body=half(), content_length=len(data))  # then hangs up

    base = "/swarm/v1/blobs/{sha}"
    cutter.router.add("GET", base + "/have", have, max_body=0)
    cutter.router.add("GET", base + "/chunks/{index}", chunk, max_body=0)
    await nursery.start(cutter.run)
    me, my_store = await start(ca, tmp_path, nursery, 87)
    introduce([good, cutter, me])
    await wait_until(lambda: len(me.peers()) == 2, "peers")
    good_store.add_file(path, CHUNK)
    fetcher = Fetcher(me, my_store, info, TransferConfig(refresh_have_s=0.1))
    done = await fetcher.fetch()
    assert done.read_bytes() == path.read_bytes()
    assert fetcher.progress.sources.get(str(cutter.identity.uuid), 0) == 0

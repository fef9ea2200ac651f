"""Blob transfer between real nodes on loopback mTLS: multi-source fetch, a corrupt
peer caught per chunk and penalized, resume without refetching verified chunks."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio
from fleet_helpers import loopback_node, make_envoy

from vigo_server_lite.ca import FleetCA
from vigo_swarm import ServerHint, SwarmNode
from vigo_swarm.blobstore import BlobInfo, BlobStore, describe_file
from vigo_swarm.peers import PeerView
from vigo_swarm.transfer import (
    BlobServer,
    Fetcher,
    TransferConfig,
    connections_per_peer,
    register_blob_routes,
)

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


async def two_peers(
    tmp: Path, nursery: trio.Nursery, n: int
) -> tuple[tuple[SwarmNode, BlobStore], tuple[SwarmNode, BlobStore]]:
    """Nodes 127.0.0.n and n+1, each with a store, confirmed as each other's peer."""
    ca = FleetCA.load_or_create(tmp / "ca")
    first, second = await start(ca, tmp, nursery, n), await start(ca, tmp, nursery, n + 1)
    introduce([first[0], second[0]])
    await wait_until(lambda: len(first[0].peers()) == len(second[0].peers()) == 1, "peers")
    return first, second


async def seeded_pair(
    tmp: Path, nursery: trio.Nursery, n: int, source: tuple[Path, BlobInfo]
) -> tuple[BlobStore, SwarmNode]:
    """Two peers; the first holds ``source`` complete: (its store, the other node)."""
    (_, seed_store), (other, _) = await two_peers(tmp, nursery, n)
    seed_store.add_file(source[0], source[1].chunk_bytes)
    return seed_store, other


async def super_seed_and_two(
    tmp: Path, nursery: trio.Nursery, n: int, chunks: int
) -> tuple[BlobServer, BlobStore, SwarmNode, SwarmNode, SwarmNode, BlobInfo]:
    """A seed (127.0.0.n) super-seeding a ``chunks``-chunk blob with a reveal window
    longer than any test, and two receivers (n+1, n+2) that know it: (its BlobServer,
    its store, its node, the receivers' nodes, the blob's info)."""
    ca = FleetCA.load_or_create(tmp / "ca")
    seed = loopback_node(make_envoy(ca, tmp, "seed"), n, None)
    seed_store = BlobStore(tmp / "seed-store")
    server = BlobServer(seed, seed_store, reveal_after_s=3600)
    await nursery.start(seed.run)
    (a, _), (b, _) = [await start(ca, tmp, nursery, n + 1 + i) for i in range(2)]
    introduce([seed, a, b])
    await wait_until(lambda: len(a.peers()) == len(b.peers()) == 2, "peers")
    src = tmp / "seeded.bin"
    src.write_bytes(os.urandom(chunks * CHUNK))
    info = seed_store.add_file(src, CHUNK)
    server.superseed(info)
    return server, seed_store, seed, a, b, info


def to_peer(target: SwarmNode) -> Callable[[SwarmNode], PeerView]:
    """node -> its peer entry for ``target``."""
    return lambda node: next(p for p in node.peers() if p.uuid == target.identity.uuid)


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
    _, me = await seeded_pair(tmp_path, nursery, 95, source)
    path, info = source
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
    cutter = loopback_node(make_envoy(ca, tmp_path, "cutter"), 86, None)
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


async def test_a_superseeded_blob_leaves_the_seed_once_and_receivers_trade_the_rest(
    tmp_path: Path, nursery: trio.Nursery, source: tuple[Path, BlobInfo]
) -> None:
    """With a reveal window longer than the test, the seed hands each chunk out once
    until every chunk has gone out (then it serves like any peer, for the tail): the
    three receivers trade, and the seed sends less than the three copies a plain seed
    would."""
    from vigo_swarm.transfer import BlobServer

    ca = FleetCA.load_or_create(tmp_path / "ca")
    seed = loopback_node(make_envoy(ca, tmp_path, "seed"), 70, None)
    seed_store = BlobStore(tmp_path / "seed-store")
    server = BlobServer(seed, seed_store, reveal_after_s=3600)
    await nursery.start(seed.run)
    receivers = [await start(ca, tmp_path, nursery, 71 + i) for i in range(3)]
    introduce([seed, *(n for n, _ in receivers)])
    await wait_until(lambda: all(len(n.peers()) == 3 for n, _ in receivers), "peers")
    path, info = source
    seed_store.add_file(path, CHUNK)
    server.superseed(info)
    fetchers = [Fetcher(n, s, info, TransferConfig(have_wait_s=2)) for n, s in receivers]
    async with trio.open_nursery() as inner:
        for f in fetchers:
            inner.start_soon(f.fetch)
    for _, store in receivers:
        done = store.blob_path(info.sha256)
        assert done is not None and done.read_bytes() == path.read_bytes()
    from_seed = sum(f.progress.sources.get(str(seed.identity.uuid), 0) for f in fetchers)
    assert info.num_chunks <= from_seed <= server.stats.chunks_served < 3 * info.num_chunks
    assert all(len(f.progress.sources) >= 2 for f in fetchers)  # they traded


async def test_a_held_have_long_poll_learns_at_once_when_the_seed_gave_out_its_last_chunk(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Once every chunk went out, the super-seed hides nothing: a receiver holding a
    long-poll on its bitmap hears so when the last chunk leaves, not after the poll's
    20 s (or the 1 h reveal window)."""
    from vigo_swarm.blobstore import decode_bitmap
    from vigo_swarm.transfer import board_for

    server, seed_store, seed, a, b, info = await super_seed_and_two(tmp_path, nursery, 55, 3)
    base = f"/swarm/v1/blobs/{info.sha256}"
    to_seed = to_peer(seed)

    async with await a.dial(to_seed(a)) as conn_a, await b.dial(to_seed(b)) as conn_b:
        for index in (0, 1):
            assert (await conn_a.request("GET", f"{base}/chunks/{index}")).status == 200
        first = await conn_b.request("GET", base + "/have")
        assert decode_bitmap(first.body, 3) == {2}  # 0 and 1 went to a
        version = first.headers["x-vigo-have-version"]
        answer: list[set[int]] = []

        async def hold_the_poll() -> None:
            resp = await conn_b.request("GET", f"{base}/have?after={version}&wait=20")
            answer.append(decode_bitmap(resp.body, 3))

        async with trio.open_nursery() as inner:
            inner.start_soon(hold_the_poll)
            held = board_for(seed_store)._events  # a held long-poll waits on an event
            await wait_until(lambda: info.sha256 in held, "b's long-poll held by the seed")
            with trio.fail_after(15):  # well under the 20 s the poll may be held
                assert (await conn_a.request("GET", f"{base}/chunks/2")).status == 200
                while not answer:
                    await trio.sleep(0.02)
    assert answer == [{0, 1, 2}]
    assert server.stats.not_offered == 0


async def test_have_long_poll_answers_when_a_chunk_arrives_and_refuses_bad_waits(
    tmp_path: Path, nursery: trio.Nursery, source: tuple[Path, BlobInfo]
) -> None:
    (_, holder_store), (asker, _) = await two_peers(tmp_path, nursery, 60)
    path, info = source
    partial = holder_store.begin(info)
    peer = asker.peers()[0]
    base = f"/swarm/v1/blobs/{info.sha256}"
    async with await asker.dial(peer) as conn:
        first = await conn.request("GET", base + "/have")
        version = first.headers["x-vigo-have-version"]
        for bad in ("wait=-1", "wait=nan", "wait=21", "wait=x"):
            resp = await conn.request("GET", f"{base}/have?after={version}&{bad}")
            assert resp.status == 400 and resp.error_code == "bad_wait", bad
        resp = await conn.request("GET", f"{base}/info?wait=1e9")
        assert resp.status == 400 and resp.error_code == "bad_wait"

        async def add_a_chunk() -> None:
            await trio.sleep(0.2)
            from vigo_swarm.transfer import board_for

            partial.write_chunk(3, path.read_bytes()[3 * CHUNK : 4 * CHUNK])
            board_for(holder_store).bump(info.sha256)

        async with trio.open_nursery() as inner:
            inner.start_soon(add_a_chunk)
            with trio.fail_after(15):  # well under the 20 s the poll may be held
                resp = await conn.request("GET", f"{base}/have?after={version}&wait=20")
        assert resp.status == 200
        assert resp.headers["x-vigo-have-version"] != version
        from vigo_swarm.blobstore import decode_bitmap

        assert decode_bitmap(resp.body, info.num_chunks) == {3}


async def test_the_bandwidth_limits_meter_every_chunk_fetched_and_served(
    tmp_path: Path, nursery: trio.Nursery, source: tuple[Path, BlobInfo]
) -> None:
    from vigo_swarm.ratelimit import Limiter
    from vigo_swarm.transfer import BlobServer

    class Metered(Limiter):
        taken = 0

        async def take(self, nbytes: int) -> None:
            self.taken += nbytes
            await super().take(nbytes)

    ca = FleetCA.load_or_create(tmp_path / "ca")
    seed = loopback_node(make_envoy(ca, tmp_path, "seed"), 64, None)
    seed_store, serve = BlobStore(tmp_path / "seed-store"), Metered(200.0)
    BlobServer(seed, seed_store, serve_limit=serve)
    await nursery.start(seed.run)
    me, my_store = await start(ca, tmp_path, nursery, 65)
    introduce([seed, me])
    await wait_until(lambda: len(me.peers()) == 1, "peers")
    path, info = source
    seed_store.add_file(path, CHUNK)
    fetch = Metered(200.0)
    done = await Fetcher(me, my_store, info, TransferConfig(fetch_limit=fetch)).fetch()
    assert done.read_bytes() == path.read_bytes()
    assert fetch.taken == serve.taken == info.size_bytes


async def test_a_chunk_body_lands_in_the_callers_buffer_and_errors_do_not(
    tmp_path: Path, nursery: trio.Nursery, source: tuple[Path, BlobInfo]
) -> None:
    _, asker = await seeded_pair(tmp_path, nursery, 64, source)
    path, info = source
    data = path.read_bytes()
    base = f"/swarm/v1/blobs/{info.sha256}/chunks"
    buf = memoryview(bytearray(CHUNK))
    async with await asker.dial(asker.peers()[0]) as conn:
        resp = await conn.request("GET", f"{base}/3", into=buf)
        assert resp.status == 200 and resp.body == b"" and resp.view is not None
        assert bytes(resp.view) == data[3 * CHUNK : 4 * CHUNK]
        last = info.num_chunks - 1
        resp = await conn.request("GET", f"{base}/{last}", into=buf)  # the short tail
        assert resp.view is not None and bytes(resp.view) == data[last * CHUNK :]
        resp = await conn.request("GET", f"{base}/99999", into=buf)  # an error answer
        assert resp.status == 404 and resp.view is None and resp.error_code == "no_chunk"
        small = bytearray(10)  # too small for a chunk: the body comes as bytes instead
        resp = await conn.request("GET", f"{base}/0", into=memoryview(small))
        assert resp.view is None and resp.body == data[:CHUNK] and small == bytearray(10)
        resp = await conn.request("GET", f"{base}/1", into=buf)  # the connection is fine
        assert resp.view is not None and bytes(resp.view) == data[CHUNK : 2 * CHUNK]


def test_a_fetch_opens_two_connections_to_a_few_sources_and_one_to_each_of_many() -> None:
    cfg = TransferConfig()
    assert [connections_per_peer(cfg, n) for n in (0, 1, 2, 3, 4, 8, 100)] == [2, 2, 2, 1, 1, 1, 1]
    assert connections_per_peer(TransferConfig(connections_per_peer=3, connections_total=9), 3) == 3
    with pytest.raises(ValueError, match="connections_per_peer"):
        TransferConfig(connections_per_peer=0)
    with pytest.raises(ValueError, match="connections_total"):
        TransferConfig(connections_per_peer=3, connections_total=2)


async def test_a_chunk_answer_carries_the_bitmap_when_it_changed_since_the_askers_version(
    tmp_path: Path, nursery: trio.Nursery, source: tuple[Path, BlobInfo]
) -> None:
    """A busy connection learns the peer's new chunks from the chunk answers themselves
    (``x-vigo-have-after`` -> ``x-vigo-have-version`` and, if it changed, ``x-vigo-have``):
    no bitmap request of its own."""
    import base64

    from vigo_swarm.blobstore import decode_bitmap
    from vigo_swarm.transfer import board_for

    (_, holder_store), (asker, _) = await two_peers(tmp_path, nursery, 90)
    path, info = source
    data = path.read_bytes()
    partial = holder_store.begin(info)
    for i in (0, 1):
        partial.write_chunk(i, data[i * CHUNK : (i + 1) * CHUNK])
    base = f"/swarm/v1/blobs/{info.sha256}"
    async with await asker.dial(asker.peers()[0]) as conn:
        first = await conn.request("GET", base + "/have")
        seen = first.headers["x-vigo-have-version"]
        plain = await conn.request("GET", base + "/chunks/0")  # did not ask: told nothing
        assert plain.status == 200 and "x-vigo-have-version" not in plain.headers
        same = await conn.request("GET", base + "/chunks/0", headers={"x-vigo-have-after": seen})
        assert same.headers["x-vigo-have-version"] == seen and "x-vigo-have" not in same.headers
        partial.write_chunk(5, data[5 * CHUNK : 6 * CHUNK])
        board_for(holder_store).bump(info.sha256)
        moved = await conn.request("GET", base + "/chunks/1", headers={"x-vigo-have-after": seen})
        assert moved.status == 200 and moved.headers["x-vigo-have-version"] != seen
        bitmap = base64.b64decode(moved.headers["x-vigo-have"])
        assert decode_bitmap(bitmap, info.num_chunks) == {0, 1, 5}
        bad = await conn.request("GET", base + "/chunks/1", headers={"x-vigo-have-after": "v" * 65})
        assert bad.status == 400 and bad.error_code == "bad_after"


async def test_super_seeding_shows_each_asker_its_own_view_on_chunk_answers_and_refusals(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    import base64

    from vigo_swarm.blobstore import decode_bitmap

    _, _, seed, a, b, info = await super_seed_and_two(tmp_path, nursery, 91, 4)
    base = f"/swarm/v1/blobs/{info.sha256}"
    to_seed = to_peer(seed)

    def shown(resp) -> set[int]:  # type: ignore[no-untyped-def]
        return decode_bitmap(base64.b64decode(resp.headers["x-vigo-have"]), 4)

    after = {"x-vigo-have-after": "-"}
    async with await a.dial(to_seed(a)) as conn_a, await b.dial(to_seed(b)) as conn_b:
        got_a = await conn_a.request("GET", f"{base}/chunks/0", headers=after)
        assert got_a.status == 200 and shown(got_a) == {0, 1, 2, 3}
        got_b = await conn_b.request("GET", f"{base}/chunks/1", headers=after)
        assert got_b.status == 200 and shown(got_b) == {1, 2, 3}  # 0 went to a
        refused = await conn_b.request("GET", f"{base}/chunks/0", headers=after)
        assert refused.status == 409 and refused.error_code == "not_offered"
        assert shown(refused) == {1, 2, 3}


def quiet_peer_routes(
    node: SwarmNode, full: BlobStore, info: BlobInfo, have_header: Callable[[], str]
) -> None:
    """A test peer holding the whole blob whose ``/have`` only ever shows chunk 0 (and
    holds a long-poll until it times out), while every chunk answer carries
    ``have_header()`` as its ``x-vigo-have``."""
    from vigo_swarm import http11
    from vigo_swarm.blobstore import encode_bitmap

    async def have(request: http11.Request) -> http11.Response:
        if "after" in request.query:
            await trio.sleep(float(request.query.get("wait", "0")))
        bitmap = encode_bitmap([0], info.num_chunks)
        return http11.Response(
            body=bitmap, content_type="x", headers=[("x-vigo-have-version", "q.1")]
        )

    async def chunk(request: http11.Request) -> http11.Response:
        data = full.read_chunk(info.sha256, int(request.params["index"]))
        headers = [("x-vigo-have-version", "q.2"), ("x-vigo-have", have_header())]
        return http11.Response(body=data, content_type="x", headers=headers)

    base = "/swarm/v1/blobs/{sha}"
    node.router.add("GET", base + "/have", have, max_body=0)
    node.router.add("GET", base + "/chunks/{index}", chunk, max_body=0)


async def test_a_fetch_learns_a_busy_peers_chunks_from_its_chunk_answers(
    tmp_path: Path, nursery: trio.Nursery, source: tuple[Path, BlobInfo]
) -> None:
    """The only source's bitmap requests only ever show chunk 0; the rest of the blob is
    advertised only on its chunk answers, and the fetch completes from it."""
    import base64

    from vigo_swarm.blobstore import encode_bitmap

    ca = FleetCA.load_or_create(tmp_path / "ca")
    path, info = source
    full = BlobStore(tmp_path / "quiet-store")
    full.add_file(path, CHUNK)
    quiet = loopback_node(make_envoy(ca, tmp_path, "quiet"), 94, None)
    everything = base64.b64encode(encode_bitmap(range(info.num_chunks), info.num_chunks)).decode()
    quiet_peer_routes(quiet, full, info, lambda: everything)
    await nursery.start(quiet.run)
    me, my_store = await start(ca, tmp_path, nursery, 95)
    introduce([quiet, me])
    await wait_until(lambda: len(me.peers()) == 1, "peers")
    fetcher = Fetcher(me, my_store, info, TransferConfig(have_stale_s=3600))
    with trio.fail_after(60):
        done = await fetcher.fetch()
    assert done.read_bytes() == path.read_bytes()
    assert fetcher.progress.sources == {str(quiet.identity.uuid): info.num_chunks}


@pytest.mark.parametrize("header", ["!!not base64!!", "AAAA"], ids=["not-base64", "wrong-length"])
async def test_a_peer_with_a_bad_bitmap_on_its_chunk_answers_is_dropped_and_the_fetch_completes(
    tmp_path: Path, nursery: trio.Nursery, source: tuple[Path, BlobInfo], header: str
) -> None:
    ca = FleetCA.load_or_create(tmp_path / "ca")
    path, info = source
    full = BlobStore(tmp_path / "bad-store")
    full.add_file(path, CHUNK)
    liar = loopback_node(make_envoy(ca, tmp_path, "liar"), 96, None)
    quiet_peer_routes(liar, full, info, lambda: header)
    await nursery.start(liar.run)
    good, good_store = await start(ca, tmp_path, nursery, 97)
    me, my_store = await start(ca, tmp_path, nursery, 98)
    introduce([liar, good, me])
    await wait_until(lambda: len(me.peers()) == 2, "peers")
    good_store.add_file(path, CHUNK)
    fetcher = Fetcher(me, my_store, info)
    with trio.fail_after(60):
        done = await fetcher.fetch()
    assert done.read_bytes() == path.read_bytes()
    assert fetcher.progress.sources.get(str(liar.identity.uuid), 0) == 0


def test_clear_bits_clears_exactly_the_given_bits() -> None:
    from vigo_swarm.blobstore import decode_bitmap, encode_bitmap
    from vigo_swarm.transfer import clear_bits

    full = encode_bitmap(range(11), 11)
    assert decode_bitmap(clear_bits(full, [0, 7, 10]), 11) == set(range(11)) - {0, 7, 10}
    assert clear_bits(full, []) is full


async def test_the_connections_that_fetched_the_chunk_list_carry_the_fetch(
    tmp_path: Path, nursery: trio.Nursery, source: tuple[Path, BlobInfo]
) -> None:
    """``info_from_peers(keep=...)`` leaves each answered connection open and the fetch
    takes them: no peer is dialed again. A connection cut off mid-request (here: by a
    cancelled long-poll) is never kept."""
    from vigo_swarm.blobinfo import info_from_peers

    ca = FleetCA.load_or_create(tmp_path / "ca")
    path, info = source
    (h1, s1), (h2, s2), (me, my_store) = [
        await start(ca, tmp_path, nursery, 100 + i) for i in range(3)
    ]
    introduce([h1, h2, me])
    await wait_until(lambda: len(me.peers()) == 2, "peers")
    for store in (s1, s2):
        store.add_file(path, CHUNK)

    def dials() -> int:
        return sum(n.server.stats.connections for n in (h1, h2) if n.server is not None)

    ready: dict = {}  # type: ignore[type-arg]
    found = await info_from_peers(
        me, me.peers(), info.sha256, lambda i: None, print, wait_s=5, keep=ready
    )
    assert found == info and set(ready) == {h1.identity.uuid, h2.identity.uuid}
    assert all(conn.reusable for conn in ready.values())
    before = dials()
    fetcher = Fetcher(me, my_store, info, TransferConfig(connections_per_peer=1), ready=ready)
    done = await fetcher.fetch()
    assert done.read_bytes() == path.read_bytes()
    assert dials() == before and ready == {}

    other = "ab" * 32  # nobody holds it: the long-polls are cancelled by the deadline
    kept: dict = {}  # type: ignore[type-arg]
    with trio.move_on_after(0.5):
        await info_from_peers(me, me.peers(), other, lambda i: None, print, wait_s=5, keep=kept)
    assert kept == {}


async def test_a_peer_slow_to_answer_does_not_hold_up_the_chunk_list_once_found(
    tmp_path: Path, nursery: trio.Nursery, source: tuple[Path, BlobInfo]
) -> None:
    from vigo_swarm import http11
    from vigo_swarm.blobinfo import info_from_peers

    ca = FleetCA.load_or_create(tmp_path / "ca")
    path, info = source
    slow = loopback_node(make_envoy(ca, tmp_path, "slow"), 104, None)

    async def never(request: http11.Request) -> http11.Response:
        await trio.sleep(3600)
        raise AssertionError("unreachable")

    slow.router.add("GET", "/swarm/v1/blobs/{sha}/info", never, max_body=0)
    await nursery.start(slow.run)
    (holder, holder_store), (me, _) = [
        await start(ca, tmp_path, nursery, 105 + i) for i in range(2)
    ]
    introduce([slow, holder, me])
    await wait_until(lambda: len(me.peers()) == 2, "peers")
    holder_store.add_file(path, CHUNK)
    ready: dict = {}  # type: ignore[type-arg]
    with trio.fail_after(20):
        found = await info_from_peers(
            me, me.peers(), info.sha256, lambda i: None, print, wait_s=5, keep=ready
        )
    assert found == info and set(ready) == {holder.identity.uuid}
    for conn in ready.values():
        await conn.aclose()

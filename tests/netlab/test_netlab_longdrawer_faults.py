"""Issue 5, done-when (netlab), faults: bob's folder on envoys that are partitioned
(nftables) or killed.

- Partition: the same file edited on both sides, and a file deleted on one side and
  edited on the other; after the heal both versions of the edited file are on all
  three envoys (one under the name, one as a conflict copy) and the edit of the
  deleted file is kept.
- kill -9 of the receiving daemon during a 256 MiB transfer (links rate-capped so it
  takes seconds): no partial file is ever visible in ~/longdrawer/ (polled while it
  runs), and after the restart the transfer completes without fetching again the
  chunks verified before the kill (the partial's bitmap and the bytes_fetched
  counter show it).
"""

from __future__ import annotations

import hashlib
import pwd
import signal
import subprocess
from pathlib import Path

import pytest
from ld_netlab import as_bob, bob_fleet, ld_status, tree

from netlab.pytest_fixtures import FleetFactory, requires_root
from vigo_swarm.blobstore import BlobInfo

pytestmark = [pytest.mark.netlab, requires_root, pytest.mark.timeout(600)]

BIG = 256 << 20


def listing(folder: Path) -> dict[str, str]:
    """name → content of the regular files directly in ``folder``."""
    return {p.name: p.read_text() for p in sorted(folder.iterdir()) if p.is_file()}


def test_partition_keeps_both_versions_and_the_edit(
    fleet_factory: FleetFactory, bob: pwd.struct_passwd, homes_dir: Path
) -> None:
    fleet, folders = bob_fleet(fleet_factory, bob, homes_dir, 3)
    a, b, c = folders
    hosts = fleet.lab.envoys
    as_bob(f"cd {a} && echo base > notes.txt && echo base > keep.txt")
    fleet.wait_for(
        lambda: tree(a) == tree(b) == tree(c) and "keep.txt" in tree(c), 60, "first sync"
    )
    seq_a = ld_status(fleet, hosts[0])["seq"]
    fleet.lab.cut(hosts[0])  # a alone | b and c together
    as_bob(f"cd {a} && echo 'edited on a' > notes.txt && rm keep.txt")
    as_bob(f"cd {b} && echo 'edited on b' > notes.txt && echo 'kept on b' > keep.txt")
    fleet.wait_for(
        lambda: ld_status(fleet, hosts[0])["seq"] >= seq_a + 2,  # type: ignore[operator]
        30,
        "a indexed its edits while cut off",
    )
    fleet.wait_for(lambda: tree(b) == tree(c), 60, "b's edits reach c across the partition")
    assert listing(c)["notes.txt"] == "edited on b\n"
    assert "keep.txt" not in listing(a)
    fleet.lab.restore(hosts[0])

    def healed() -> bool:
        files = listing(a)
        return tree(a) == tree(b) == tree(c) and sorted(files.values()) == [
            "edited on a\n",
            "edited on b\n",
            "kept on b\n",
        ]

    fleet.wait_for(healed, 120, "after the heal: both versions and the edit on all three")
    files = listing(c)
    copies = [n for n in files if n.startswith("notes.sync-conflict-")]
    assert len(copies) == 1 and copies[0].endswith(".txt")
    assert {files["notes.txt"], files[copies[0]]} == {"edited on a\n", "edited on b\n"}
    assert files["keep.txt"] == "kept on b\n"  # delete vs edit: the edit stays
    # whichever envoy first saw both versions kept the copy (docs/longdrawer.md): which
    # one depends on timing, but some envoy counted the conflict
    assert any(ld_status(fleet, h)["conflicts"] >= 1 for h in hosts)


def have_chunks(state_dir: Path, sha: str) -> tuple[int, int, int]:
    """(chunks verified, chunks in all, chunk size) in the receiver's partial of ``sha``
    (its on-disk bitmap and info); zeros before it exists."""
    partial = state_dir / "longdrawer" / ".blobs" / "partial" / sha
    try:
        info = BlobInfo.from_json((partial / "info").read_bytes())
        bitmap = (partial / "have").read_bytes()
    except (FileNotFoundError, ValueError):
        return 0, 0, 0
    return sum(bin(byte).count("1") for byte in bitmap), info.num_chunks, info.chunk_bytes


def test_kill_9_mid_transfer_shows_nothing_partial_and_resumes(
    fleet_factory: FleetFactory, bob: pwd.struct_passwd, homes_dir: Path, tmp_path: Path
) -> None:
    fleet, (a, b) = bob_fleet(fleet_factory, bob, homes_dir, 2, rate_mbit=200)
    _sender, victim = fleet.lab.envoys
    state = fleet.lab.host(victim).state_dir
    as_bob(f"head -c {BIG} /dev/urandom > {a}/.big.tmp && mv {a}/.big.tmp {a}/big.bin")
    sha = subprocess.run(
        ["sha256sum", str(a / "big.bin")], check=True, capture_output=True, text=True
    ).stdout.split()[0]
    seen_partial: list[str] = []

    def nothing_partial_then(done: bool) -> bool:
        for path in b.iterdir():  # every name bob can see: absent, or the whole file
            size = path.lstat().st_size
            if size != BIG:
                seen_partial.append(f"{path.name}: {size} bytes")
        return done

    def quarter_way() -> bool:
        held, total, _ = have_chunks(state, sha)
        return total > 0 and held >= total // 4

    fleet.wait_for(
        lambda: nothing_partial_then(quarter_way()),
        180,
        "the victim a quarter of the way",
        interval_s=0.05,
    )
    fleet.lab.kill(victim, signal.SIGKILL)
    before, total, chunk = have_chunks(state, sha)
    assert 0 < before < total
    nothing_partial_then(True)
    fleet.start_envoy(victim, {"home_root": str(b.parent.parent)})
    fleet.wait_for(
        lambda: nothing_partial_then((b / "big.bin").exists()),
        300,
        "the victim completing after its restart",
        interval_s=0.05,
    )
    assert not seen_partial, seen_partial
    digest = hashlib.sha256((b / "big.bin").read_bytes()).hexdigest()
    assert digest == sha
    # the restarted daemon fetched exactly the chunks that were not verified before
    fetched = ld_status(fleet, victim)["bytes_fetched"]
    assert fetched == BIG - before * chunk, (fetched, before, chunk)

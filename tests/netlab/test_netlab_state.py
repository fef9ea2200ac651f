"""State files, staleness and wait_for: pure or on a temporary run dir. No root."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from netlab import NetlabError, WaitTimeout, wait_for
from netlab._cleanup import mount_points, mounts_to_remove
from netlab._proc import ProcessRef, is_alive, process_ref
from netlab._state import (
    LabRecord,
    SpawnedProcess,
    Unreadable,
    is_stale,
    locked,
    read_records,
    remove_record,
    write_record,
)
from netlab._topology import plan_hosts

OWNER = ProcessRef(4242, 99)


def record(lab_id: str = "ab12cd", owner: ProcessRef | None = OWNER) -> LabRecord:
    root = Path(f"/tmp/vgl-{lab_id}")
    return LabRecord(
        lab_id=lab_id,
        owner=owner,
        root_dir=root,
        remove_root=True,
        bridge_namespace=f"vgl-{lab_id}-br",
        hosts=plan_hosts(lab_id, 2, with_server=True, root_dir=root),
        processes=[SpawnedProcess("envoy1", ProcessRef(7, 8), ("vigo", "agent", "run"))],
        created_at=1.5,
    )


def test_record_round_trips_through_json() -> None:
    rec = record()
    data = json.loads(json.dumps(rec.to_json()))
    assert LabRecord.from_json(data) == rec
    assert data["owner_pid"] == 4242 and data["detached"] is False
    assert data["namespaces"] == [
        "vgl-ab12cd-server",
        "vgl-ab12cd-envoy1",
        "vgl-ab12cd-envoy2",
        "vgl-ab12cd-br",
    ]


def test_detached_record() -> None:
    data = record(owner=None).to_json()
    assert data["owner_pid"] == 0 and data["detached"] is True
    assert LabRecord.from_json(data).detached


def test_malformed_record_is_a_netlab_error() -> None:
    data = record().to_json()
    del data["hosts"]
    with pytest.raises(NetlabError, match="malformed"):
        LabRecord.from_json(data)
    with pytest.raises(NetlabError, match="version"):
        LabRecord.from_json({**record().to_json(), "version": 99})


def test_staleness() -> None:
    assert is_stale(record(), lambda ref: False)
    assert not is_stale(record(), lambda ref: True)
    assert not is_stale(record(owner=None), lambda ref: False)  # detached: never stale


def test_process_refs_survive_pid_reuse() -> None:
    me = process_ref(os.getpid())
    assert me is not None and is_alive(me)
    assert not is_alive(ProcessRef(me.pid, me.start_ticks + 1))  # same pid, other process
    assert process_ref(2**22 + 1) is None  # above pid_max


def test_write_read_remove(tmp_path: Path) -> None:
    write_record(record("ab12cd"), tmp_path)
    write_record(record("ef34ab", owner=None), tmp_path)
    (tmp_path / "0000ff.json").write_text("{not json")
    (tmp_path / "notes.json").write_text("{}")
    with locked(tmp_path):
        found = read_records(tmp_path)
    ids = sorted(r.lab_id for r in found)
    assert ids == ["0000ff", "ab12cd", "ef34ab"]
    assert next(r for r in found if isinstance(r, Unreadable)).lab_id == "0000ff"
    remove_record("ab12cd", tmp_path)
    remove_record("ab12cd", tmp_path)  # idempotent
    assert sorted(r.lab_id for r in read_records(tmp_path)) == ["0000ff", "ef34ab"]
    assert not list(tmp_path.glob("*.tmp*"))
    assert read_records(tmp_path / "missing") == []


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_wait_for_returns_the_first_truthy_value() -> None:
    clock = FakeClock()
    values = iter([None, [], NetlabError("not up yet"), ["peer"]])

    def poll() -> list[str] | None:
        value = next(values)
        if isinstance(value, Exception):
            raise value
        return value

    assert wait_for(poll, 5, "peers", clock=clock, sleep=clock.sleep) == ["peer"]
    assert clock.slept == [0.1, 0.1, 0.1]


def test_wait_for_times_out_with_the_last_value() -> None:
    clock = FakeClock()
    with pytest.raises(WaitTimeout) as info:
        wait_for(lambda: 0, 1.0, "the answer", interval_s=0.3, clock=clock, sleep=clock.sleep)
    assert isinstance(info.value, TimeoutError)
    assert "the answer" in str(info.value) and "last seen: 0" in str(info.value)
    assert clock.now == pytest.approx(101.0)  # never sleeps past the deadline


def test_wait_for_abort_ends_early() -> None:
    clock = FakeClock()
    with pytest.raises(NetlabError, match="daemon exited"):
        wait_for(
            lambda: False, 60, "x", abort=lambda: "daemon exited", clock=clock, sleep=clock.sleep
        )
    assert clock.slept == []


def test_record_keeps_its_mounts_and_reads_old_files_without_them() -> None:
    rec = record()
    rec.mounts.append(Path("/tmp/vgl-ab12cd/envoy1"))
    data = json.loads(json.dumps(rec.to_json()))
    assert data["mounts"] == ["/tmp/vgl-ab12cd/envoy1"]
    assert LabRecord.from_json(data) == rec
    del data["mounts"]  # a state file written before mounts were recorded
    assert LabRecord.from_json(data).mounts == []


MOUNTINFO = """\
22 1 0:21 / / rw - ext4 /dev/sda1 rw
90 22 0:50 / /tmp/vgl-ab12cd/envoy1 rw - tmpfs tmpfs rw,size=8192k
91 90 0:51 / /tmp/vgl-ab12cd/envoy1/swarm rw - tmpfs tmpfs rw
92 90 0:52 / /tmp/vgl-ab12cd/envoy1 rw - tmpfs tmpfs rw
93 22 0:53 / /tmp/vgl-ab12cd2/envoy1 rw - tmpfs tmpfs rw
94 22 0:54 / /tmp/vgl-ab12cd rw - tmpfs tmpfs rw
95 22 0:55 / /mnt/with\\040space rw - tmpfs tmpfs rw
"""


def test_mount_points_parse_mountinfo_with_escapes_and_stacks() -> None:
    points = mount_points(MOUNTINFO)
    assert Path("/mnt/with space") in points
    assert points.count(Path("/tmp/vgl-ab12cd/envoy1")) == 2


def test_mounts_to_remove_are_the_labs_own_deepest_first() -> None:
    root = Path("/tmp/vgl-ab12cd")
    found = mounts_to_remove([Path("/mnt/with space")], root, mount_points(MOUNTINFO))
    assert found == [
        Path("/tmp/vgl-ab12cd/envoy1/swarm"),
        Path("/tmp/vgl-ab12cd/envoy1"),
        Path("/tmp/vgl-ab12cd/envoy1"),  # stacked: unmounted twice
        Path("/mnt/with space"),  # recorded, even outside the root
    ]  # not the root itself, not a sibling lab's /tmp/vgl-ab12cd2

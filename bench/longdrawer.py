"""longdrawer against Syncthing, two hosts in netlab, in one run (root).

Both systems run at the same time on the same two lab hosts (no rate cap), each with
its own folder; every measurement runs on one system while the other idles, and the
samples of the two alternate, so both see the same (shared, noisy) machine:

- latency: a new 1 KiB file on host a until it is on host b, whole (SAMPLES samples);
  p50 and p99 (with 20 samples p99 is the slowest but one, interpolated);
- one 256 MiB file (written outside the folder, then moved in): MB/s = size / (time
  from the move until it is whole on b);
- 1000 x 4 KiB files created at once in a new directory: time until all are on b.

Syncthing is the Debian package ``syncthing`` (1.19), installed with
``apt-get install -y syncthing`` when missing. It is configured headless through its
``config.xml`` (``syncthing generate``, then edited): one shared folder, the two
devices with their netlab addresses, listening on tcp://<netlab address>:22000,
global and local discovery, relays, NAT traversal, usage reporting, crash reports and
upgrades off, the GUI/REST API on <netlab address>:8384 with an API key (used to
wait until the devices are connected). Its watcher delay (``fsWatcherDelayS``) is set
to 1 s, its smallest setting (default 10 s: a new file would take ~10 s).

Ours: ``vigo agent run`` with ``longdrawer_enabled: true``; the person is root, with a
per-host ``home_root`` (both hosts share this machine's filesystem).

Targets (issue 5): p50 <= 0.5 s, p99 <= 2 s, faster than Syncthing on every row.
Last line: RESULT {json}; each row gives ours, syncthing, and ratio = ours/syncthing
for times (below 1: we are faster) or ours/syncthing for MB/s (above 1: faster).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from _debian import ensure

from netlab import Lab
from netlab.fleet import Fleet, console_script

ST_PORT = 22000
ST_GUI_PORT = 8384
SMALL_FILES = 1000
SMALL_BYTES = 4096


def ensure_syncthing() -> str:
    ensure("syncthing", "syncthing")
    out = subprocess.run(["syncthing", "--version"], check=True, capture_output=True, text=True)
    return out.stdout.split()[1]


def wait_for(pred: Callable[[], bool], timeout_s: float, what: str, step_s: float = 0.005) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(step_s)


def whole(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


class Syncthing:
    """Syncthing on the lab's two envoy hosts, sharing one folder."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.hosts = lab.envoys[:2]
        self.root = lab.root_dir / "syncthing"
        self.key = secrets.token_hex(16)
        self.ids: list[str] = []

    def home(self, i: int) -> Path:
        return self.root / f"home{i}"

    def folder(self, i: int) -> Path:
        return self.root / f"folder{i}"

    def setup(self) -> None:
        for i in range(2):
            self.folder(i).mkdir(parents=True)
            home = str(self.home(i))
            subprocess.run(
                ["syncthing", "generate", f"--home={home}", "--no-default-folder"],
                check=True,
                capture_output=True,
            )
            out = subprocess.run(
                ["syncthing", "serve", f"--home={home}", "--device-id"],
                check=True,
                capture_output=True,
                text=True,
            )
            self.ids.append(out.stdout.strip())
        for i in range(2):
            self._configure(i)

    def _configure(self, i: int) -> None:
        path = self.home(i) / "config.xml"
        tree = ET.parse(path)
        cfg = tree.getroot()
        addr = self.hosts[i].address
        for old in cfg.findall("folder") + cfg.findall("device"):
            cfg.remove(old)
        folder = ET.SubElement(
            cfg,
            "folder",
            id="bench",
            label="bench",
            path=str(self.folder(i)),
            type="sendreceive",
            rescanIntervalS="3600",
            fsWatcherEnabled="true",
            fsWatcherDelayS="1",
            ignorePerms="false",
            autoNormalize="true",
        )
        ET.SubElement(folder, "filesystemType").text = "basic"
        for j in range(2):
            ET.SubElement(folder, "device", id=self.ids[j], introducedBy="")
        for j in range(2):
            dev = ET.SubElement(
                cfg,
                "device",
                id=self.ids[j],
                name=self.hosts[j].name,
                compression="metadata",
                introducer="false",
                skipIntroductionRemovals="false",
                introducedBy="",
            )
            ET.SubElement(dev, "address").text = f"tcp://{self.hosts[j].address}:{ST_PORT}"
            ET.SubElement(dev, "paused").text = "false"
            ET.SubElement(dev, "autoAcceptFolders").text = "false"
        gui = cfg.find("gui")
        assert gui is not None, "syncthing generate wrote no <gui>"
        gui.set("enabled", "true")
        gui.set("tls", "false")
        for tag, text in (("address", f"{addr}:{ST_GUI_PORT}"), ("apikey", self.key)):
            node = gui.find(tag)
            if node is None:
                node = ET.SubElement(gui, tag)
            node.text = text
        options = cfg.find("options")
        assert options is not None, "syncthing generate wrote no <options>"
        for tag, text in (
            ("listenAddress", f"tcp://{addr}:{ST_PORT}"),
            ("globalAnnounceEnabled", "false"),
            ("localAnnounceEnabled", "false"),
            ("relaysEnabled", "false"),
            ("natEnabled", "false"),
            ("urAccepted", "-1"),
            ("autoUpgradeIntervalH", "0"),
            ("startBrowser", "false"),
            ("crashReportingEnabled", "false"),
        ):
            for node in options.findall(tag):
                options.remove(node)
            ET.SubElement(options, tag).text = text
        tree.write(path)

    def start(self) -> None:
        for i, host in enumerate(self.hosts):
            self.lab.spawn(
                host,
                [
                    "syncthing",
                    "serve",
                    f"--home={self.home(i)}",
                    "--no-browser",
                    "--no-restart",
                    "--no-upgrade",
                ],
                env={"STNODEFAULTFOLDER": "1", "HOME": str(self.home(i))},
            )
        wait_for(self.connected, 120, "the two syncthing devices to connect", step_s=0.5)

    def connected(self) -> bool:
        host = self.hosts[0]
        done = self.lab.exec(
            host,
            [
                "curl",
                "-sS",
                "-m",
                "5",
                "-H",
                f"X-API-Key: {self.key}",
                f"http://{host.address}:{ST_GUI_PORT}/rest/system/connections",
            ],
            check=False,
        )
        try:
            conns = json.loads(done.stdout)["connections"]
        except (ValueError, KeyError):
            return False
        return bool(conns.get(self.ids[1], {}).get("connected"))


def start_ours(lab: Lab) -> tuple[Fleet, list[Path]]:
    fleet = Fleet(lab, agent_config={"longdrawer_enabled": True})
    fleet.start_server()
    fleet.enroll_all()
    folders = []
    for h in lab.envoys[:2]:
        home = lab.root_dir / "homes" / h.name
        (home / "root" / "longdrawer").mkdir(parents=True)
        folders.append(home / "root" / "longdrawer")
        fleet.start_envoy(h, {"home_root": str(home)})
    fleet.wait_until_confirmed(timeout_s=120)

    def partnered() -> bool:
        for h in lab.envoys[:2]:
            out = fleet.lab.exec(
                h,
                [
                    str(console_script("vigo")),
                    "swarm",
                    "longdrawer",
                    "status",
                    "--state-dir",
                    str(h.state_dir),
                    "--json",
                ],
            ).stdout
            people = json.loads(out)
            if not people or not people[0]["peers"]:
                return False
        return True

    wait_for(partnered, 120, "the two envoys to partner for root's folder", step_s=0.5)
    return fleet, folders


def latency(src: Path, dst: Path, name: str) -> float:
    data = os.urandom(1024)
    t0 = time.monotonic()
    (src / name).write_bytes(data)
    wait_for(lambda: whole(dst / name, len(data)), 60, f"{name} on the other host")
    return time.monotonic() - t0


def big_file(src: Path, dst: Path, staging: Path, size: int) -> float:
    staged = staging / "big.bin"
    with open(staged, "wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
    t0 = time.monotonic()
    os.rename(staged, src / "big.bin")
    wait_for(lambda: whole(dst / "big.bin", size), 600, "the large file", step_s=0.02)
    return time.monotonic() - t0


def small_files(src: Path, dst: Path) -> float:
    blobs = [os.urandom(SMALL_BYTES) for _ in range(SMALL_FILES)]
    t0 = time.monotonic()
    (src / "many").mkdir()
    for i, data in enumerate(blobs):
        (src / "many" / f"f{i:04}.bin").write_bytes(data)

    def all_there() -> bool:
        try:
            entries = list(os.scandir(dst / "many"))
        except FileNotFoundError:
            return False
        n = sum(1 for e in entries if e.name.endswith(".bin") and e.stat().st_size == SMALL_BYTES)
        return n == SMALL_FILES

    wait_for(all_there, 600, "the small files", step_s=0.02)
    return time.monotonic() - t0


def pct(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--keep-logs", metavar="DIR", help="copy our daemons' logs here")
    args = ap.parse_args()
    version = ensure_syncthing()
    size = args.mib << 20
    with Lab.create(2) as lab:
        staging = lab.root_dir / "staging"
        staging.mkdir()
        _fleet, (ours_a, ours_b) = start_ours(lab)
        st = Syncthing(lab)
        st.setup()
        st.start()
        st_a, st_b = st.folder(0), st.folder(1)
        systems = {"ours": (ours_a, ours_b), "syncthing": (st_a, st_b)}
        time.sleep(2)  # both idle after start-up before the first sample

        lat: dict[str, list[float]] = {k: [] for k in systems}
        for i in range(args.samples):
            for name, (a, b) in systems.items():
                lat[name].append(latency(a, b, f"lat-{i:02}.txt"))
                time.sleep(0.3)  # not a wait for a result: spaces the samples apart
        print("latency samples (s):", {k: [round(v, 3) for v in vs] for k, vs in lat.items()})

        big: dict[str, float] = {}
        for name, (a, b) in systems.items():
            big[name] = size / big_file(a, b, staging, size) / 1e6
            print(f"{name}: one {args.mib} MiB file at {big[name]:.1f} MB/s")

        many: dict[str, float] = {}
        for name, (a, b) in systems.items():
            many[name] = small_files(a, b)
            print(f"{name}: {SMALL_FILES} x 4 KiB in {many[name]:.2f} s")
        if args.keep_logs:
            os.makedirs(args.keep_logs, exist_ok=True)
            for h in lab.hosts:
                if h.log_file.exists():
                    shutil.copy(h.log_file, os.path.join(args.keep_logs, h.name + ".log"))

    rows = {
        "latency_p50_s": {k: pct(v, 50) for k, v in lat.items()},
        "latency_p99_s": {k: pct(v, 99) for k, v in lat.items()},
        "big_file_MBps": big,
        "small_files_s": many,
    }
    result: dict[str, object] = {"syncthing": version, "samples": args.samples, "mib": args.mib}
    for key, row in rows.items():
        result[key] = {
            "ours": round(row["ours"], 3),
            "syncthing": round(row["syncthing"], 3),
            "ratio": round(row["ours"] / row["syncthing"], 3),
        }
    result["targets_met"] = {
        "p50<=0.5s": rows["latency_p50_s"]["ours"] <= 0.5,
        "p99<=2s": rows["latency_p99_s"]["ours"] <= 2.0,
        "faster_every_row": rows["latency_p50_s"]["ours"] < rows["latency_p50_s"]["syncthing"]
        and rows["latency_p99_s"]["ours"] < rows["latency_p99_s"]["syncthing"]
        and big["ours"] > big["syncthing"]
        and many["ours"] < many["syncthing"],
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()

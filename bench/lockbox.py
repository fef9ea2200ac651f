"""Encrypting a 256 MiB file for lockbox, against the Debian ``age -e`` on the same file.

Both encrypt the same file to the same recipient (the puddle's ``ssh-ed25519`` key)
and write the ciphertext to a file on the same filesystem, medians of 3:
- ours: ``lockbox.agefile.encrypt`` (age v1 plus the padding stanza), file to file;
- age: ``age -e -r "<ssh-ed25519 …>" -o OUT IN``.

Also measured: the rest of lockbox's path for one file (copying the ciphertext into the
blob store: hashing, chunk list, fsync — ``store_s``), decryption with pyrage, and the
puddle unlock (one Argon2id derivation with the default parameters, t=3, 64 MiB, p=4).

Targets (issue 4): ours/age >= 0.7 (throughput ratio), unlock <= 1 s.
Last line: RESULT {json}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _debian import ensure

from vigo_swarm.blobstore import BlobStore
from vigo_swarm.lockbox import agefile
from vigo_swarm.puddle import DEFAULT_KDF, PuddleKey, ssh_public, unwrap, wrap


def median_s(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    ensure("age", "age")
    size = args.mib << 20
    key = PuddleKey.generate()
    recipient = ssh_public(key.public)
    with tempfile.TemporaryDirectory(prefix="bench-lockbox-", dir="/var/tmp") as tmp:
        root = Path(tmp)
        src, ours_out, age_out = root / "plain", root / "ours.age", root / "age.age"
        with open(src, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(args.mib):
                f.write(block)

        def ours() -> None:
            with open(src, "rb", buffering=0) as i, open(ours_out, "wb") as o:
                agefile.encrypt(i, size, o, key.public)

        def age() -> None:
            subprocess.run(["age", "-e", "-r", recipient, "-o", str(age_out), str(src)], check=True)

        ours()  # warm the page cache and both code paths once
        age()
        ours_s = median_s(ours, args.runs)
        age_s = median_s(age, args.runs)

        def store() -> None:
            shutil.rmtree(root / "store", ignore_errors=True)
            BlobStore(root / "store").add_file(ours_out, 1 << 20)

        store_s = median_s(store, args.runs)
        (root / "id").write_bytes(key.openssh_private())

        def decrypt() -> None:
            with open(ours_out, "rb") as i, open(root / "back", "wb") as o:
                agefile.decrypt(i, o, key.openssh_private())

        decrypt_s = median_s(decrypt, args.runs)
        cli = subprocess.run(
            ["age", "-d", "-i", str(root / "id"), str(ours_out)], capture_output=True, check=True
        )
        assert cli.stdout == src.read_bytes(), "age -d does not give the plaintext back"
        wrapped = wrap(key, "bench passphrase")
        unlock_s = median_s(lambda: unwrap(wrapped, "bench passphrase"), args.runs)
        sizes = {"plain": size, "ours": ours_out.stat().st_size, "age": age_out.stat().st_size}

    mb = size / 1e6
    result = {
        "file_mib": args.mib,
        "ours_s": round(ours_s, 3),
        "age_s": round(age_s, 3),
        "ours_mb_s": round(mb / ours_s, 1),
        "age_mb_s": round(mb / age_s, 1),
        "ours_over_age": round(age_s / ours_s, 2),
        "target_ours_over_age": 0.7,
        "store_s": round(store_s, 3),
        "ours_with_store_over_age": round(age_s / (ours_s + store_s), 2),
        "decrypt_mb_s": round(mb / decrypt_s, 1),
        "padding_bytes": sizes["ours"] - sizes["age"],
        "unlock_s": round(unlock_s, 3),
        "target_unlock_s": 1.0,
        "argon2id": {
            "t": DEFAULT_KDF.time_cost,
            "m_kib": DEFAULT_KDF.memory_kib,
            "p": DEFAULT_KDF.parallelism,
        },
        "age_cli_decrypts_ours": True,
        "load_1m": round(os.getloadavg()[0], 2),
    }
    print(f"RESULT {json.dumps(result)}")


if __name__ == "__main__":
    main()

"""Shared test values for the puddle tests."""

from __future__ import annotations

import uuid

from vigo_swarm.puddle import KdfParams, Puddle, PuddleKey, sign_members, wrap

FAST = KdfParams(time_cost=1, memory_kib=8 * 1024, parallelism=1)  # tests only


def new_puddle(envoy: uuid.UUID, passphrase: str = "pass phrase") -> tuple[PuddleKey, Puddle]:
    key = PuddleKey.generate()
    return key, Puddle(wrap(key, passphrase, kdf=FAST), sign_members(key, 1, [envoy]))

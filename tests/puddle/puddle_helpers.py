"""Shared test values and set-up for the puddle (and lockbox) tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

from fleet_helpers import FakeEnrolled, loopback_node, make_envoy

from vigo_server_lite.ca import FleetCA
from vigo_swarm import SwarmNode
from vigo_swarm.puddle import (
    KdfParams,
    Person,
    Puddle,
    PuddleConfig,
    PuddleKey,
    PuddleService,
    sign_members,
    wrap,
)

FAST = KdfParams(time_cost=1, memory_kib=8 * 1024, parallelism=1)  # tests only


def new_puddle(envoy: uuid.UUID, passphrase: str = "pass phrase") -> tuple[PuddleKey, Puddle]:
    key = PuddleKey.generate()
    return key, Puddle(wrap(key, passphrase, kdf=FAST), sign_members(key, 1, [envoy]))


def people(home: Path) -> Callable[[int], Person]:
    """Every uid resolves to a person living in ``home``."""

    def resolve(uid: int) -> Person:
        return Person(uid, os.getegid(), home)

    return resolve


def puddle_envoy(
    ca: FleetCA, tmp: Path, name: str, n: int
) -> tuple[FakeEnrolled, SwarmNode, PuddleService, Path]:
    """An enrolled envoy on 127.0.0.<n> with a PuddleService whose one person (this
    uid) lives in ``tmp/home-<name>``; nothing started yet."""
    enrolled = make_envoy(ca, tmp, name)
    node = loopback_node(enrolled, n, None)
    home = tmp / f"home-{name}"
    home.mkdir()
    service = PuddleService(
        node,
        tmp / f"{name}-puddles.json",
        people(home),
        PuddleConfig(sync_interval_s=0.5),
    )
    return enrolled, node, service, home

"""pytest fixtures for tests that need a lab. Import them into a conftest::

    from netlab.pytest_fixtures import fleet_factory, lab_factory  # noqa: F401

``lab_factory`` skips the test when not root, and guarantees ``down()`` of every lab it
made at teardown — also when the test failed — after copying the hosts' logs into the
test's ``tmp_path`` (so a failure can be read after the lab is gone; the lab itself
keeps its short ``/tmp/vgl-<labid>`` root, since unix socket paths are limited to 108
bytes and pytest's tmp paths are long).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol

import pytest

from ._errors import ROOT_REASON, NetlabError, is_root
from ._lab import Lab
from .fleet import Fleet

#: Mark for test modules/functions that need root: ``pytestmark = [netlab, requires_root]``.
requires_root = pytest.mark.skipif(not is_root(), reason=ROOT_REASON)


class LabFactory(Protocol):
    def __call__(
        self, envoys: int, *, rate_mbit: float | None = None, with_server: bool = True
    ) -> Lab: ...


class FleetFactory(Protocol):
    def __call__(
        self,
        envoys: int,
        *,
        agent_config: Mapping[str, object] | None = None,
        rate_mbit: float | None = None,
        bin_dir: Path | None = None,
        start_server: bool = True,
    ) -> Fleet: ...


@pytest.fixture
def lab_factory(tmp_path: Path) -> Iterator[LabFactory]:
    """Make labs with ``lab_factory(envoys, rate_mbit=…, with_server=…)``."""
    if not is_root():
        pytest.skip(ROOT_REASON)
    labs: list[Lab] = []

    def make(envoys: int, *, rate_mbit: float | None = None, with_server: bool = True) -> Lab:
        lab = Lab.create(envoys, rate_mbit=rate_mbit, with_server=with_server)
        labs.append(lab)
        return lab

    try:
        yield make
    finally:
        errors: list[NetlabError] = []
        for lab in reversed(labs):
            _keep_logs(lab, tmp_path / f"netlab-{lab.id}")
            try:
                lab.down()
            except NetlabError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def fleet_factory(lab_factory: LabFactory) -> FleetFactory:
    """Make a lab with a server (started unless ``start_server=False``) and N envoy
    hosts, wrapped in a :class:`Fleet`. Enrolling and starting envoys is the test's."""

    def make(
        envoys: int,
        *,
        agent_config: Mapping[str, object] | None = None,
        rate_mbit: float | None = None,
        bin_dir: Path | None = None,
        start_server: bool = True,
    ) -> Fleet:
        lab = lab_factory(envoys, rate_mbit=rate_mbit, with_server=True)
        fleet = Fleet(lab, agent_config=agent_config, bin_dir=bin_dir)
        if start_server:
            fleet.start_server()
        return fleet

    return make


def _keep_logs(lab: Lab, dest: Path) -> None:
    logs = lab.root_dir / "logs"
    if logs.is_dir():
        shutil.copytree(logs, dest, dirs_exist_ok=True)

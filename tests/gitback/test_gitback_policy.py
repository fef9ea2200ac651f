"""Gitback authorization, pure: the host pattern matcher, the check-in policy wire form."""

from __future__ import annotations

import pytest

from vigo_agent.checkin import CheckinError, parse_answer
from vigo_swarm.gitback.policy import (
    DENY_ALL,
    GitbackPolicy,
    PolicyError,
    check_patterns,
    host_allowed,
    policy_from_wire,
)

ISSUE = ["-web*", "dev*"]


@pytest.mark.parametrize(
    ("patterns", "host", "allowed"),
    [
        (ISSUE, "dev1", True),
        (ISSUE, "DEV2", True),  # hostnames compare lower-cased
        (ISSUE, "web1", False),  # denied by the first pattern
        (ISSUE, "webdev1", False),
        (ISSUE, "db1", False),  # no pattern matches: default deny
        (["dev*", "-dev3"], "dev3", True),  # first match wins, not the most specific
        (["-dev3", "dev*"], "dev3", False),
        (["*"], "anything.example.net", True),
        (["-*", "dev*"], "dev1", False),
        (["dev[12]"], "dev2", True),
        (["dev[12]"], "dev3", False),
        (["dev?"], "dev10", False),
        ([], "dev1", False),  # no list at all: nobody
        (ISSUE, "", False),
        (ISSUE, None, False),  # a certificate without a hostname
    ],
)
def test_first_match_wins_and_default_deny(
    patterns: list[str], host: str | None, allowed: bool
) -> None:
    assert host_allowed(patterns, host) is allowed
    assert GitbackPolicy(tuple(patterns)).allows_host(host) is allowed


@pytest.mark.parametrize(
    "bad",
    [["-"], [""], ["dev 1"], ["Dev*"], ["dev/1"], ["a" * 300], [1], "dev*", [None], ["dev;rm"]],
)
def test_bad_patterns_are_refused(bad: object) -> None:
    with pytest.raises(PolicyError):
        check_patterns(bad)


def test_policy_wire_round_trip_and_strictness() -> None:
    policy = GitbackPolicy(("-web*", "dev*"), frozenset({"carol", "dave"}))
    assert policy_from_wire(policy.to_wire()) == policy
    assert policy.opted_in("carol") and not policy.opted_in("erin")
    assert not DENY_ALL.allows_host("dev1") and not DENY_ALL.opted_in("carol")
    for bad in (
        {"enabled": ["dev*"]},  # users missing
        {"enabled": ["dev*"], "users": [], "extra": 1},
        {"enabled": ["dev*"], "users": ["Carol!"]},
        {"enabled": ["dev*"], "users": ["-rf"]},
        {"enabled": "dev*", "users": []},
        [],
    ):
        with pytest.raises(PolicyError):
            policy_from_wire(bad)


def test_checkin_answer_carries_the_policy() -> None:
    answer = parse_answer({"gitback": {"enabled": ["dev*"], "users": ["carol"]}})
    assert answer.gitback == GitbackPolicy(("dev*",), frozenset({"carol"}))
    assert parse_answer({}).gitback is None  # an older server: keep what we have
    with pytest.raises(CheckinError, match="gitback"):
        parse_answer({"gitback": {"enabled": ["dev*"]}})

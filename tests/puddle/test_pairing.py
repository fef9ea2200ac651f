"""peer-pair codes as a pure state machine: time is an argument."""

from __future__ import annotations

import re

import pytest

from vigo_swarm.puddle import PairingRefused, normalize_code
from vigo_swarm.puddle.pairing import PairingBook, new_code


def test_codes_are_eight_digits_and_random() -> None:
    codes = {new_code() for _ in range(200)}
    assert all(re.fullmatch(r"\d{4}-\d{4}", c) for c in codes)
    assert len(codes) > 190
    assert new_code(lambda n: 7) == "0000-0007"


def test_normalize_what_people_type() -> None:
    assert normalize_code("48210937") == "4821-0937"
    assert normalize_code("4821 0937") == "4821-0937"
    fullwidth = "\uff14\uff18\uff12\uff11-\uff10\uff19\uff13\uff17"
    for bad in ("4821-093", "4821-09377", "abcd-efgh", fullwidth, ""):
        with pytest.raises(ValueError):
            normalize_code(bad)


def test_a_code_redeems_once_for_its_owner() -> None:
    book = PairingBook()
    code, expires = book.issue(1000, now=10.0)
    assert expires == 310.0
    assert book.redeem(code, now=20.0) == 1000
    with pytest.raises(PairingRefused) as info:
        book.redeem(code, now=21.0)
    assert info.value.reason == "used"
    assert code not in str(info.value)


def test_a_code_expires_after_five_minutes() -> None:
    book = PairingBook()
    code, _ = book.issue(1000, now=0.0)
    with pytest.raises(PairingRefused) as info:
        book.redeem(code, now=300.0)
    assert info.value.reason == "expired"
    assert book.view(1000, 300.0).state == "expired"  # type: ignore[union-attr]


def test_wrong_codes_lock_the_pairing_out() -> None:
    book = PairingBook(max_failures=5)
    code, _ = book.issue(1000, now=0.0)
    wrong = "0000-0000" if code != "0000-0000" else "0000-0001"
    for i in range(5):
        with pytest.raises(PairingRefused) as info:
            book.redeem(wrong, now=float(i))
        assert info.value.reason == "wrong_code"
    # the right code is now useless
    with pytest.raises(PairingRefused) as info:
        book.redeem(code, now=6.0)
    assert info.value.reason == "cancelled"
    assert book.view(1000, 6.0).state == "cancelled"  # type: ignore[union-attr]


def test_malformed_codes_count_as_failures() -> None:
    book = PairingBook(max_failures=2)
    code, _ = book.issue(7, now=0.0)
    for junk in ("", "12345678", "1234-567x"):
        with pytest.raises(PairingRefused):
            book.redeem(junk, now=1.0)
    with pytest.raises(PairingRefused) as info:
        book.redeem(code, now=1.0)
    assert info.value.reason == "cancelled"


def test_a_new_code_replaces_the_old_and_owners_are_separate() -> None:
    book = PairingBook()
    old, _ = book.issue(1, now=0.0)
    new, _ = book.issue(1, now=1.0)
    other, _ = book.issue(2, now=1.0)
    if old not in (new, other):
        with pytest.raises(PairingRefused):
            book.redeem(old, now=2.0)
    assert book.redeem(other, now=2.0) == 2
    assert book.redeem(new, now=2.0) == 1


def test_no_open_pairing() -> None:
    book = PairingBook()
    with pytest.raises(PairingRefused) as info:
        book.redeem("1234-5678", now=0.0)
    assert info.value.reason == "no_pairing"


def test_the_code_is_not_in_any_repr() -> None:
    book = PairingBook()
    code, _ = book.issue(1, now=0.0)
    assert code not in repr(book._pairings) and code not in repr(book.view(1, 0.0))

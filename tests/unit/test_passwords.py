"""The password policy (SECURITY P2, P3): 12-128 characters as typed, no common passwords."""

from __future__ import annotations

import random

import pytest

from chatcore.domain.errors import InvalidInput
from chatcore.domain.passwords import (
    MAX_PASSWORD_CHARS,
    MIN_PASSWORD_CHARS,
    check_password,
    common_passwords,
    is_common,
)


def _refused(password: str, **kwargs: object) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        check_password(password, **kwargs)  # type: ignore[arg-type]
    assert caught.value.field == "password"
    return caught.value


def test_the_bounds_are_12_and_128() -> None:
    assert (MIN_PASSWORD_CHARS, MAX_PASSWORD_CHARS) == (12, 128)


def test_11_characters_are_refused_naming_the_field() -> None:
    _refused("qzv-trk-wmp")  # 11


@pytest.mark.parametrize("length", [12, 64, 128])
def test_12_64_and_128_characters_are_accepted(length: int) -> None:
    check_password(("zq7-vmk-" * 20)[:length])


def test_129_characters_are_refused() -> None:
    _refused("zq7-vmk-" * 16 + "x")  # 129


def test_the_password_is_measured_as_received_not_stripped() -> None:
    # 11 visible characters and a space: 12 as typed, 11 if it were stripped
    check_password(" qzv-trk-wmp")
    check_password("qzv-trk-wmp ")


def test_length_counts_characters_not_bytes() -> None:
    check_password("żółw" * 3)  # 12 characters, 21 bytes of UTF-8
    _refused("ż" * 129)


def test_a_long_unicode_passphrase_without_digits_or_symbols_is_accepted() -> None:
    check_password("Der Fuchs springt über den faulen Hund")
    check_password("雪の降る夜に静かな町を歩く")  # 13 characters, no Latin letters at all


def test_the_list_holds_at_least_3000_common_passwords() -> None:
    assert len(common_passwords()) >= 3000
    assert is_common("qwertyuiopasdfgh") or is_common("1qaz2wsx3edc")


def test_20_sampled_list_entries_of_allowed_length_are_refused() -> None:
    allowed = sorted(p for p in common_passwords() if MIN_PASSWORD_CHARS <= len(p) <= MAX_PASSWORD_CHARS)
    assert len(allowed) >= 20
    for password in random.Random(3000).sample(allowed, 20):
        error = _refused(password)
        assert "common" in error.detail


def test_list_entries_are_refused_whatever_their_case() -> None:
    entry = next(p for p in sorted(common_passwords()) if len(p) >= 12 and p.isalpha())
    _refused(entry.upper())
    _refused(entry.title())


def test_a_password_repeating_the_email_is_refused() -> None:
    _refused("Ann.Smith@Example.com", context=("ann.smith@example.com", "Ann"))
    check_password("ann.smith@example.com!", context=("ann.smith@example.com",))


def test_configured_bounds_are_honoured() -> None:
    check_password("qzv-trk-", min_chars=8)
    _refused("qzv-trk-wmp-hxl", max_chars=14)

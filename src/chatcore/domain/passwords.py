"""The password policy: length bounds on the password exactly as typed, and no common passwords.

No composition rules (ASVS V6.2.5): a long passphrase of plain words is a good password. The
password is never stripped, truncated, normalised or case-folded before it is hashed; only the
comparison with the common-password list ignores case, so `Password1234` counts as common too.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from importlib import resources

from chatcore.domain.errors import InvalidInput

MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 128
# Below this no minimum is allowed by ASVS V6.2.1, so the list only keeps entries this long.
LOWEST_ALLOWED_MINIMUM = 8

_LIST_FILE = "common_passwords.txt"


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords, case-folded."""
    text = resources.files(__package__ or "chatcore.domain").joinpath(_LIST_FILE).read_text("utf-8")
    return frozenset(line.casefold() for line in text.splitlines() if line and not line.startswith("#"))


def is_common(password: str) -> bool:
    return password.casefold() in common_passwords()


def check_password(
    password: str,
    *,
    min_chars: int = MIN_PASSWORD_CHARS,
    max_chars: int = MAX_PASSWORD_CHARS,
    context: Iterable[str] = (),
) -> None:
    """Refuse a password the policy does not allow; the error names the field `password`.

    `context` holds words the password must not simply repeat (the account's email, its name).
    """
    length = len(password)  # code points, as received
    if length < min_chars:
        raise InvalidInput("password", f"password must have at least {min_chars} characters")
    if length > max_chars:
        raise InvalidInput("password", f"password must have at most {max_chars} characters")
    folded = password.casefold()
    if folded in common_passwords():
        raise InvalidInput("password", "password is too common; choose another")
    if any(word and folded == word.casefold() for word in context):
        raise InvalidInput("password", "password must not repeat the email address or the name")

"""The PasswordHasher port on argon2-cffi: argon2id, run in worker threads off the event loop."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from argon2 import Parameters, PasswordHasher, Type, profiles
from argon2.exceptions import InvalidHashError, VerificationError

# The library default (RFC 9106 low-memory: m = 64 MiB, t = 3, p = 4), above OWASP's minimum.
PRODUCTION = profiles.RFC_9106_LOW_MEMORY
# For unit tests only: far below any safe cost.
CHEAPEST = profiles.CHEAPEST


class Argon2PasswordHasher:
    """argon2id hashes. Each hash holds `memory_cost` KiB while it runs, so at most
    `max_concurrency` run at once (each in a worker thread, never on the event loop)."""

    def __init__(self, parameters: Parameters = PRODUCTION, *, max_concurrency: int = 4) -> None:
        if parameters.type is not Type.ID:
            raise ValueError("only argon2id is allowed")
        self.parameters = parameters
        self._hasher = PasswordHasher.from_parameters(parameters)
        self._executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="argon2")

    @classmethod
    def cheapest(cls) -> Argon2PasswordHasher:
        """The cheapest parameters: unit tests only, never production."""
        return cls(CHEAPEST)

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._verify, password_hash, password
        )

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            # VerifyMismatchError is a VerificationError: a wrong password and a corrupt hash alike.
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    def close(self) -> None:
        self._executor.shutdown(wait=False)

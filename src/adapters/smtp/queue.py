"""A durable outgoing queue: mail is spooled to files, then a sender loop delivers it.

`QueuedMailer` implements the Mailer port by writing each mail to the spool and returning: an SMTP
outage never fails the request that caused the mail. `MailSender` delivers spooled mail through
any Mailer (the SMTP one in production), retries transient failures with exponential backoff,
moves a mail to the dead-letter folder after `max_attempts` failures or one permanent failure, and
drops mail whose `expires_at` has passed (a login code is useless late, and confusing).

The spool is a folder, so it needs no server (the embedded default) and survives restarts:

    queue/      one JSON file per mail waiting (written atomically: temp + fsync + rename)
    inflight/   claimed by a sender (a rename, so two senders never take the same file)
    dead/       gave up; kept for an operator, with the last error
    tmp/        staging for atomic writes

Delivery is at least once: a sender that dies mid-send leaves the file in inflight/, and
`recover()` puts it back. Log lines carry the spool id and error class only: never a recipient,
subject or body (codes and links live in the body).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import msgspec

from adapters.smtp.errors import PermanentMailError
from adapters.smtp.files import atomic_write, ensure_private_dir, fsync_dir
from adapters.smtp.message import check_mail
from adapters.system import UlidGenerator
from chatcore.ports.mail import Mail, Mailer
from chatcore.ports.system import Clock, IdGenerator

log = logging.getLogger(__name__)

_SUFFIX = ".json"


class SpooledMail(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    mail: Mail
    queued_at: datetime
    next_attempt_at: datetime
    # After this moment the mail is dropped, not sent (e.g. a login code's lifetime).
    expires_at: datetime | None = None
    attempts: int = 0
    last_error: str | None = None
    dead_at: datetime | None = None


class SendReport(msgspec.Struct, kw_only=True):
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    expired: int = 0


class MailSpool:
    """The spool folder. Methods are blocking file operations; async callers use a thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.queue_dir = root / "queue"
        self.inflight_dir = root / "inflight"
        self.dead_dir = root / "dead"
        self.tmp_dir = root / "tmp"
        for folder in (root, self.queue_dir, self.inflight_dir, self.dead_dir, self.tmp_dir):
            ensure_private_dir(folder)
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(SpooledMail)

    def put(self, entry: SpooledMail) -> None:
        atomic_write(self._name(self.queue_dir, entry.id), self._encoder.encode(entry), staging=self.tmp_dir)

    def waiting(self) -> list[SpooledMail]:
        """Every queued mail, soonest due first; unreadable files go to dead/ as they are."""
        entries = []
        for path in self._files(self.queue_dir):
            try:
                entries.append(self._decoder.decode(path.read_bytes()))
            except FileNotFoundError:
                continue  # another sender claimed it meanwhile
            except msgspec.DecodeError:
                log.error("mail spool file %s is unreadable; moved to dead/", path.name)
                with contextlib.suppress(FileNotFoundError):
                    os.replace(path, self.dead_dir / f"{path.name}.corrupt")
        return sorted(entries, key=lambda entry: (entry.next_attempt_at, entry.id))

    def dead(self) -> list[SpooledMail]:
        return [self._decoder.decode(path.read_bytes()) for path in self._files(self.dead_dir)]

    def claim(self, entry_id: str) -> bool:
        """Move a queued mail to inflight/; False if another sender got there first."""
        try:
            os.rename(self._name(self.queue_dir, entry_id), self._name(self.inflight_dir, entry_id))
        except FileNotFoundError:
            return False
        return True

    def done(self, entry_id: str) -> None:
        """Forget a claimed mail: delivered, or dropped as expired."""
        with contextlib.suppress(FileNotFoundError):
            self._name(self.inflight_dir, entry_id).unlink()
        fsync_dir(self.inflight_dir)

    def requeue(self, entry: SpooledMail) -> None:
        """Put a claimed mail back, with its new attempt count and due time."""
        self.put(entry)
        self.done(entry.id)

    def bury(self, entry: SpooledMail) -> None:
        """Move a claimed mail to dead/."""
        atomic_write(self._name(self.dead_dir, entry.id), self._encoder.encode(entry), staging=self.tmp_dir)
        self.done(entry.id)

    def recover(self) -> int:
        """Return mail left in inflight/ by a sender that stopped mid-send to the queue."""
        count = 0
        for path in self._files(self.inflight_dir):
            target = self.queue_dir / path.name
            if target.exists():  # a newer copy was already requeued
                path.unlink()
            else:
                os.replace(path, target)
            count += 1
        if count:
            fsync_dir(self.queue_dir)
            fsync_dir(self.inflight_dir)
        return count

    @staticmethod
    def _name(folder: Path, entry_id: str) -> Path:
        if not entry_id or "/" in entry_id or entry_id.startswith("."):
            raise ValueError("spool ids are plain file names")
        return folder / f"{entry_id}{_SUFFIX}"

    @staticmethod
    def _files(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.suffix == _SUFFIX and not p.name.startswith("."))


class QueuedMailer:
    """The Mailer port: `send` spools the mail durably and returns; a MailSender delivers it."""

    def __init__(
        self,
        spool: MailSpool,
        *,
        clock: Clock,
        ids: IdGenerator | None = None,
        on_queued: Callable[[], None] | None = None,
    ) -> None:
        self._spool = spool
        self._clock = clock
        self._ids = ids or UlidGenerator()
        self._on_queued = on_queued

    async def send(self, mail: Mail) -> None:
        await self.enqueue(mail, expires_at=mail.expires_at)

    async def enqueue(self, mail: Mail, *, expires_at: datetime | None = None) -> str | None:
        """Spool the mail; its id, or None if `expires_at` has already passed (nothing is spooled)."""
        # Refuse a bad header now, to the caller, rather than dead-lettering it later.
        check_mail(mail)
        now = self._clock.now()
        if expires_at is not None and expires_at <= now:
            log.info("mail dropped before queueing: already expired")
            return None
        entry = SpooledMail(
            id=self._ids.new_id(), mail=mail, queued_at=now, next_attempt_at=now, expires_at=expires_at
        )
        await asyncio.to_thread(self._spool.put, entry)
        log.info("mail %s queued", entry.id)
        if self._on_queued is not None:
            self._on_queued()
        return entry.id


class MailSender:
    """Delivers spooled mail through `mailer`; run `run()` as a background task, or `run_once()`."""

    def __init__(
        self,
        spool: MailSpool,
        mailer: Mailer,
        *,
        clock: Clock,
        max_attempts: int = 8,
        backoff_s: float = 30.0,
        max_backoff_s: float = 3600.0,
        poll_interval_s: float = 5.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._spool = spool
        self._mailer = mailer
        self._clock = clock
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._poll_interval_s = poll_interval_s
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        """Look at the spool now rather than at the next poll (pass as QueuedMailer's on_queued)."""
        self._wakeup.set()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Deliver until `stop` is set or the task is cancelled."""
        stop = stop or asyncio.Event()
        recovered = await asyncio.to_thread(self._spool.recover)
        if recovered:
            log.warning("%d mail(s) found in flight at start; queued again", recovered)
        while not stop.is_set():
            self._wakeup.clear()
            try:
                await self.run_once()
                delay = await self._seconds_until_next_due()
            except Exception:
                log.exception("mail sender pass failed; trying again later")
                delay = self._poll_interval_s
            waiters = [asyncio.ensure_future(self._wakeup.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def run_once(self) -> SendReport:
        """One pass over the spool: every due mail is tried once."""
        report = SendReport()
        for entry in await asyncio.to_thread(self._spool.waiting):
            now = self._clock.now()
            if not _expired(entry, now) and entry.next_attempt_at > now:
                continue
            if not await asyncio.to_thread(self._spool.claim, entry.id):
                continue
            await self._attempt(entry, report)
        return report

    async def _attempt(self, entry: SpooledMail, report: SendReport) -> None:
        now = self._clock.now()
        if _expired(entry, now):
            await asyncio.to_thread(self._spool.done, entry.id)
            log.info("mail %s dropped: expired before it could be delivered", entry.id)
            report.expired += 1
            return
        attempts = entry.attempts + 1
        try:
            await self._mailer.send(entry.mail)
        except (PermanentMailError, ValueError) as exc:
            await self._bury(entry, attempts, exc, report)
        except Exception as exc:
            if attempts >= self._max_attempts:
                await self._bury(entry, attempts, exc, report)
            else:
                delay = self._backoff(attempts)
                retry = msgspec.structs.replace(
                    entry,
                    attempts=attempts,
                    last_error=_error_text(exc),
                    next_attempt_at=self._clock.now() + timedelta(seconds=delay),
                )
                await asyncio.to_thread(self._spool.requeue, retry)
                log.warning(
                    "mail %s attempt %d/%d failed (%s); next try in %.1fs",
                    entry.id,
                    attempts,
                    self._max_attempts,
                    type(exc).__name__,
                    delay,
                )
                report.retried += 1
        except BaseException:
            # Cancelled mid-send: the mail may or may not have gone; put it back (at least once).
            await asyncio.shield(asyncio.to_thread(self._spool.requeue, entry))
            raise
        else:
            await asyncio.to_thread(self._spool.done, entry.id)
            log.info("mail %s delivered after %d attempt(s)", entry.id, attempts)
            report.delivered += 1

    async def _bury(self, entry: SpooledMail, attempts: int, exc: Exception, report: SendReport) -> None:
        dead = msgspec.structs.replace(
            entry, attempts=attempts, last_error=_error_text(exc), dead_at=self._clock.now()
        )
        await asyncio.to_thread(self._spool.bury, dead)
        log.error(
            "mail %s moved to dead letters after %d attempt(s) (%s)", entry.id, attempts, type(exc).__name__
        )
        report.dead += 1

    def _backoff(self, attempts: int) -> float:
        ceiling: float = min(self._max_backoff_s, self._backoff_s * 2 ** (attempts - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    async def _seconds_until_next_due(self) -> float:
        waiting = await asyncio.to_thread(self._spool.waiting)
        if not waiting:
            return self._poll_interval_s
        now = self._clock.now()
        due_in = min(
            min(entry.next_attempt_at, entry.expires_at or entry.next_attempt_at) - now for entry in waiting
        ).total_seconds()
        return max(0.0, min(self._poll_interval_s, due_in))


def _expired(entry: SpooledMail, now: datetime) -> bool:
    return entry.expires_at is not None and entry.expires_at <= now


def _error_text(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]

"""The embedded default Mailer: each mail becomes an `.eml` file (RFC 5322) in a folder.

Files are written atomically (temp + fsync + rename) with mode 0600 in a 0700 folder, so a reader
never sees half a mail and other local users never see a login code. The log line names the file
only: never the recipient, subject, body, code or link (SECURITY.md T10). File names sort in the
order mail was written: `<UTC time>-<random>.eml`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path

from adapters.smtp.files import atomic_write, ensure_private_dir
from adapters.smtp.message import compose, parse, parse_sender
from adapters.system import SystemClock
from chatcore.ports.mail import Mail
from chatcore.ports.system import Clock

log = logging.getLogger(__name__)


class FolderMailer:
    def __init__(
        self, folder: Path, *, sender: str = "chatcore@localhost", clock: Clock | None = None
    ) -> None:
        parse_sender(sender)  # a bad From stops start-up, not the first mail
        self.folder = folder
        self._sender = sender
        self._clock = clock or SystemClock()
        ensure_private_dir(folder)

    async def send(self, mail: Mail) -> None:
        now = self._clock.now()
        data = compose(mail, sender=self._sender, now=now).as_bytes()
        path = self.folder / f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(4)}.eml"
        await asyncio.to_thread(atomic_write, path, data)
        log.info("mail written to %s", path)

    def mails(self) -> list[Mail]:
        """Every mail in the folder, oldest first, read back (for tests and operators)."""
        return [parse(path.read_bytes()) for path in sorted(self.folder.glob("*.eml"))]

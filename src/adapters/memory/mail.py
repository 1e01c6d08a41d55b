"""A mailer that keeps mail in a list: for tests and embedders who send mail their own way."""

from __future__ import annotations

from chatcore.ports.mail import Mail


class MemoryMailer:
    def __init__(self) -> None:
        self.sent: list[Mail] = []

    async def send(self, mail: Mail) -> None:
        self.sent.append(mail)

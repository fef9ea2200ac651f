"""Reading passphrases: from the terminal without echo, or from a file descriptor.

Never from argv (other users can read a process's arguments). ``--passphrase-fd N``
reads every line of fd N once (N = 0 is stdin); each prompt takes the next line, so
``rotate-passphrase`` reads the old passphrase and then the new one.
"""

from __future__ import annotations

import getpass
import os

from ._common import EXIT_USAGE, CLIError

MIN_NEW_LENGTH = 8


class PassphraseSource:
    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        self._lines: list[str] | None = None

    def _next_line(self, what: str) -> str:
        if self._lines is None:
            assert self.fd is not None
            try:
                with os.fdopen(self.fd, "r", encoding="utf-8", closefd=False) as f:
                    self._lines = f.read().splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                message = f"cannot read passphrases from fd {self.fd}: {exc}"
                raise CLIError(message, EXIT_USAGE) from exc
        if not self._lines:
            raise CLIError(f"fd {self.fd} has no line for the {what}", EXIT_USAGE)
        return self._lines.pop(0)

    def _ask(self, prompt: str) -> str:
        try:
            tty = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
        except OSError as exc:
            raise CLIError(
                "no terminal to ask for the passphrase on; use --passphrase-fd N", EXIT_USAGE
            ) from exc
        os.close(tty)
        return getpass.getpass(prompt)  # reads /dev/tty, echo off

    def existing(self, what: str = "passphrase") -> str:
        if self.fd is not None:
            return self._next_line(what)
        return self._ask(f"{what.capitalize()}: ")

    def new(self, what: str = "new passphrase") -> str:
        if self.fd is not None:
            value = self._next_line(what)
        else:
            value = self._ask(f"{what.capitalize()}: ")
            if self._ask(f"{what.capitalize()} again: ") != value:
                raise CLIError("the two passphrases differ; nothing changed", EXIT_USAGE)
        if len(value) < MIN_NEW_LENGTH:
            raise CLIError(
                f"a passphrase needs at least {MIN_NEW_LENGTH} characters; nothing changed",
                EXIT_USAGE,
            )
        return value

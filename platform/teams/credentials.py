"""The gateway's own credentials (the admin key and metrics token it checks callers against, the
Redis password it presents): checked once at start, and, when they come from a file, followed
while the gateway runs.

A file is how a credential can change without a restart. Kubernetes updates the files of a
mounted Secret in place (it swaps a symlink to a new directory of files, within about a minute
of the Secret changing; never for a `subPath` mount), whereas an environment variable from a
`secretKeyRef` is fixed for the life of the container. The gateway's pods are the Ray pods that
hold the GPUs, so a rotation that needs a restart costs a new Ray cluster.

The file is looked at again at most every `recheck_s`, off the event loop, and read again only
when it changed (another inode, size or modification time). A file that has become unusable
(gone, empty, too short) makes the credential unavailable: every request that needs it is
refused until the file is fixed, rather than the old value staying good after a rotation meant
to revoke it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

# A credential an attacker may try online: 24 characters is the least either is given.
MIN_CREDENTIAL_CHARS = 24
# How stale a followed file may be. Kubernetes itself takes up to a minute or so to update a
# mounted Secret; a stat every 2 s on top of that costs nothing on the request path.
RECHECK_S = 2.0


class CredentialUnavailable(RuntimeError):
    """The credential's file cannot be used now; the message says why (never the value)."""


def check_credential(name: str, value: str) -> str:
    """`value` without the whitespace around it; ValueError naming `name` when it cannot be a
    credential. A Secret made from a file usually ends with a newline, which no HTTP header can
    carry: kept, it could never be presented, and the clients' header would be refused. For the
    same reason a credential is visible ASCII only. The error never quotes the value."""
    value = value.strip()
    if not value:
        raise ValueError(
            f"{name} is set but empty (an empty Secret key?): give it a token of at least "
            f"{MIN_CREDENTIAL_CHARS} characters, or unset it"
        )
    if len(value) < MIN_CREDENTIAL_CHARS:
        raise ValueError(f"{name} must be at least {MIN_CREDENTIAL_CHARS} characters")
    if not all("!" <= c <= "~" for c in value):
        raise ValueError(
            f"{name} must be visible ASCII characters only (no spaces or control characters): "
            "it is sent in an HTTP header"
        )
    return value


def _read_text(name: str, path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"{name}: cannot read {path}: {reason}") from None


def read_credential_file(name: str, path: Path) -> str:
    """The credential in the file `path` (named by the variable `name` in messages);
    ValueError naming both when it cannot be read or cannot be a credential."""
    return check_credential(f"{name} ({path})", _read_text(name, path))


def read_password_file(name: str, path: Path) -> str:
    """The password in the file `path`, without the whitespace around it; ValueError naming
    `name` and the path when it cannot be read or is empty. Unlike the gateway's own
    credentials, a password is whatever the server it opens was given: no rule on its length
    or characters."""
    value = _read_text(name, path).strip()
    if not value:
        raise ValueError(f"{name} ({path}) is empty (an empty Secret key?)")
    return value


def _stamp(path: Path) -> tuple[int, int, int, int]:
    """What changes when the file is replaced or rewritten (stat follows Kubernetes' symlinks)."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


@dataclass
class Credential:
    """One credential of the gateway's: `value` fixed for the process's life, or, with `path`,
    followed in that file (module docstring), read by `read` (which checks it as at start).
    `name` is the variable that set it, for messages."""

    name: str
    value: str
    path: Path | None = None
    recheck_s: float = RECHECK_S
    read: Callable[[str, Path], str] = read_credential_file
    _problem: str | None = field(default=None, repr=False)
    _stamp: tuple[int, int, int, int] | None = field(default=None, repr=False)
    _checked: float = field(default_factory=time.monotonic, repr=False)

    async def current(self) -> str:
        """The credential now; CredentialUnavailable while its file cannot be used."""
        if self.path is not None and time.monotonic() - self._checked >= self.recheck_s:
            # Set before the await, so concurrent requests start one re-read, not one each.
            self._checked = time.monotonic()
            await asyncio.to_thread(self.reread)
        if self._problem is not None:
            raise CredentialUnavailable(self._problem)
        return self.value

    def reread(self) -> None:
        """Take in the file's content if the file changed (blocking: a stat, maybe a read)."""
        assert self.path is not None
        try:
            stamp: tuple[int, int, int, int] | None = _stamp(self.path)
        except OSError:
            stamp = None  # gone: the read below says so, in the words it uses at start
        if stamp is not None and stamp == self._stamp:
            return
        try:
            value = self.read(self.name, self.path)
        except ValueError as exc:
            self._set_problem(str(exc))
            return
        self._stamp = stamp
        if self._problem is not None or value != self.value:
            log.warning("%s: took in a changed credential from %s", self.name, self.path)
        self.value, self._problem = value, None

    def _set_problem(self, problem: str) -> None:
        if problem != self._problem:  # once per problem, not once per check
            log.error("%s is unavailable, refusing what needs it: %s", self.name, problem)
        # Forgotten, so the file is read again at the next check even if it comes back
        # unchanged (the same file, after a moment of being unreadable).
        self._problem, self._stamp = problem, None

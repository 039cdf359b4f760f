"""API keys: `gfk_<id>_<secret>`. The id is public (it names the key in listings and logs); the
secret is 256 random bits. Only SHA-256 of the whole key is ever stored.

Keys an administrator brings (bootstrap files, a Kubernetes Secret) may have any shape of 32 to
128 URL-safe characters; their id is then the start of their digest."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass

KEY_PATTERN = re.compile(r"^gfk_([a-z2-7]{12})_([A-Za-z0-9_-]{43})$")
ANY_KEY = re.compile(r"^[A-Za-z0-9_.-]{32,128}$")


@dataclass(frozen=True)
class NewKey:
    key: str
    id: str
    digest: str


def key_digest(key: str) -> str:
    """What the store keeps (and looks keys up by)."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> NewKey:
    key_id = base64.b32encode(secrets.token_bytes(8)).decode().lower()[:12]
    secret = secrets.token_urlsafe(32)
    key = f"gfk_{key_id}_{secret}"
    return NewKey(key=key, id=key_id, digest=key_digest(key))


def looks_like_key(value: str) -> bool:
    """Whether `value` can be a key; anything else is refused before Redis is asked."""
    return ANY_KEY.match(value) is not None


def key_id(key: str) -> str:
    """The public id of a key (safe to log and show)."""
    match = KEY_PATTERN.match(key)
    return match.group(1) if match else key_digest(key)[:12]

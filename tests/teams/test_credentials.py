"""A credential followed in its file (teams/credentials.py), without a gateway: what it answers
as the file changes, disappears and comes back. The gateway's side over HTTP is
tests/gateway/test_credential_rotation.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gemma_fleet.teams.credentials import Credential, CredentialUnavailable

KEY = "k" * 30


def _current(credential: Credential) -> str:
    return asyncio.run(credential.current())


def test_a_file_that_vanishes_and_comes_back_unchanged_is_good_again(tmp_path: Path) -> None:
    """A moment of being unreadable (a volume remounted, a file moved away and back) must not
    leave the credential refused once the very same file is back."""
    path = tmp_path / "admin-key"
    path.write_text(KEY)
    credential = Credential("GEMMA_FLEET_ADMIN_KEY_FILE", KEY, path, recheck_s=0.0)
    assert _current(credential) == KEY
    path.rename(tmp_path / "aside")
    with pytest.raises(CredentialUnavailable, match="No such file"):
        _current(credential)
    (tmp_path / "aside").rename(path)  # the same inode, size and modification time
    assert _current(credential) == KEY

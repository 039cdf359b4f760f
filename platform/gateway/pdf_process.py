"""The gateway's PDF reader: PDFium in a child process of its own.

PDFium parses untrusted files in C. Inside the gateway's process, a PDF that crashed it would
take down every request the replica was answering, and one that sent it into a loop would
hold the reader for good. In a child process a crash costs the one request that caused it, a
read past the time limit is killed, and the next PDF gets a fresh child. PDFium is not
thread-safe either, so a replica reads one PDF at a time: PDFs queue for the child in arrival
order. The child also does the base64 of the pictures, work the gateway's event loop would
otherwise share the interpreter with.

On the pipes, frames of an 8-byte big-endian length and then that many bytes. Gateway to
child: a JSON header {"what": <the part's name>}, then the PDF. Child to gateway: a JSON
header, {"pages": n} followed by n pairs of frames (the page's text in UTF-8, its JPEG in
base64), or {"error": <message>} for a PDF it cannot read, or {"failed": <exception>} for a
bug. The gateway reads only data from the child, never pickles: whatever a PDF does to the
child, it cannot run code in the gateway.

    python -m gemma_fleet.gateway.pdf_process --memory-mib 2048   # the gateway starts it
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import resource
import signal
import struct
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gemma_fleet.gateway.pdf_render import MAX_PDF_PAGES, Page, UnreadablePdf, render_pages

log = logging.getLogger(__name__)

# How long one PDF may take to read. 100 dense pages take about 1 s on one core
# (benchmarks/gateway_pdf_read); a PDF that takes 30 times that is made to.
PDF_READ_TIMEOUT_S = 30.0
# The child's address space. A PDF is compressed: a 1 MB page whose content stream inflates
# to 1 GB took PDFium 2 GB of memory; within the body limit, one request could ask for tens of
# gigabytes and take the gateway's pod down with it. Under this limit PDFium aborts instead
# (the child dies, that request gets a 400). Ordinary PDFs, scans and pages drawing 40,000 px
# images read in about 100 MB.
PDF_READER_MEMORY_MIB = 2048
# How long the child may take to start (an interpreter and PDFium: about 0.2 s).
START_TIMEOUT_S = 20.0
_LENGTH = struct.Struct(">Q")
# The most one frame may hold: a page's picture is under 1 MB, a PDF within the body limit.
MAX_FRAME_BYTES = 256 * 2**20
READY = b'{"ready": true}'


class ReaderFailed(RuntimeError):
    """The child broke its side of the wire, or could not start: a fault of the gateway."""


class _Reply(BaseModel):
    """The child's header for one PDF: its page count, or why it read none (`error`: the
    PDF's fault, `failed`: the reader's)."""

    model_config = ConfigDict(extra="forbid")

    pages: int | None = Field(None, ge=1, le=MAX_PDF_PAGES)
    error: str | None = None
    failed: str | None = None


# Why a child was stopped midway through a PDF (PdfReader's `on_stop`).
StopReason = Literal["timeout", "crash", "abandoned", "fault"]


class PdfReader:
    """Reads PDFs in a child process (started at the first PDF, again after one it could not
    survive), one at a time, each within `timeout_s` and `memory_mib` of address space.
    `command` starts the child; by default this module under the gateway's own interpreter.
    `on_stop` hears of each child stopped midway through a PDF, and why (for the gateway's
    metrics)."""

    def __init__(
        self,
        timeout_s: float = PDF_READ_TIMEOUT_S,
        memory_mib: int = PDF_READER_MEMORY_MIB,
        command: Sequence[str] | None = None,
        on_stop: Callable[[StopReason], None] | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.memory_mib = memory_mib
        default = (sys.executable, "-m", __name__, "--memory-mib", str(memory_mib))
        self._command = tuple(command or default)
        self._on_stop = on_stop
        self._child: asyncio.subprocess.Process | None = None
        self._turn = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        """The running child's process id (None before the first PDF, or after a kill)."""
        return None if self._child is None else self._child.pid

    async def read(self, raw: bytes, what: str) -> list[Page]:
        """The pages of the PDF in `raw` (`render_pages`, in the child). UnreadablePdf, naming
        `what`, for a PDF the child cannot read, one that takes longer than the time limit or
        one it dies on; ReaderFailed if the child cannot start or breaks the wire."""
        async with self._turn:  # the wait for an earlier PDF does not count against the limit
            child = await self._running()
            try:
                return await asyncio.wait_for(self._exchange(child, raw, what), self.timeout_s)
            except UnreadablePdf:
                raise  # the child said so, and is ready for the next PDF
            except TimeoutError:
                await self._stop("timeout")
                raise UnreadablePdf(
                    f"{what} was not read within {self.timeout_s:g} s (a 100-page PDF takes "
                    "about a second); it was abandoned"
                ) from None
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                status = await self._stop("crash")
                if status == f"killed by signal {signal.SIGABRT.value}":
                    # How PDFium ends when an allocation fails.
                    status += f"; it may need more than the reader's {self.memory_mib:,} MiB"
                raise UnreadablePdf(
                    f"{what} could not be read: the PDF reader stopped on it ({status})"
                ) from exc
            except asyncio.CancelledError:  # the caller left: nobody waits for this PDF
                await self._stop("abandoned")
                raise
            except BaseException:  # a broken wire: the child's state is unknown
                await self._stop("fault")
                raise

    async def aclose(self) -> None:
        """Stop the child, if one runs."""
        async with self._turn:
            await self._stop(None)

    async def _running(self) -> asyncio.subprocess.Process:
        if self._child is not None and self._child.returncode is None:
            return self._child
        self._child = await asyncio.create_subprocess_exec(
            *self._command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        try:
            assert self._child.stdout is not None
            ready = await asyncio.wait_for(_read_frame(self._child.stdout), START_TIMEOUT_S)
            if ready != READY:
                raise ReaderFailed(f"the PDF reader started with {ready[:80]!r}, not ready")
        except (TimeoutError, asyncio.IncompleteReadError) as exc:
            status = await self._stop("fault")
            raise ReaderFailed(f"the PDF reader did not start ({status})") from exc
        except BaseException:
            await self._stop(None)
            raise
        return self._child

    async def _exchange(
        self, child: asyncio.subprocess.Process, raw: bytes, what: str
    ) -> list[Page]:
        assert child.stdin is not None and child.stdout is not None
        for frame in (json.dumps({"what": what}).encode(), raw):
            child.stdin.write(_LENGTH.pack(len(frame)) + frame)
        await child.stdin.drain()
        try:
            reply = _Reply.model_validate_json(await _read_frame(child.stdout))
        except ValidationError as exc:
            raise ReaderFailed(f"the PDF reader answered what it may not: {exc}") from exc
        if reply.error is not None:
            raise UnreadablePdf(reply.error)
        if reply.pages is None:
            raise ReaderFailed(f"the PDF reader failed: {reply.failed}")
        pages = []
        for _ in range(reply.pages):
            text = (await _read_frame(child.stdout)).decode("utf-8")
            picture = (await _read_frame(child.stdout)).decode("ascii")
            pages.append(Page(text, picture))
        return pages

    async def _stop(self, reason: StopReason | None) -> str:
        """Kill the child (if it still runs) and say how it ended; `reason` (None: not midway
        through a PDF) goes to `on_stop`."""
        child, self._child = self._child, None
        if reason is not None and self._on_stop is not None:
            self._on_stop(reason)
        if child is None:
            return "not running"
        if child.returncode is None:
            # Not child.kill(): Popen checks first whether the child has ended, and in doing so
            # reaps one that just died (a crash), which leaves asyncio's own wait for it without
            # an exit status. The pid stays this child's until asyncio's wait reaps it.
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
        status = await child.wait()
        ended = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
        if reason is not None:  # for the operator: PDFs that keep doing this want a look
            log.warning(
                "PDF reader %s stopped midway through a PDF: %s (%s)", child.pid, reason, ended
            )
        return ended


class PdfReaders:
    """Several PdfReaders, for a replica that reads PDFs side by side: each PDF goes to the
    first reader free, in arrival order. Each reader is a process of its own, so they share
    no PDFium state."""

    def __init__(self, readers: Sequence[PdfReader]) -> None:
        if not readers:
            raise ValueError("PdfReaders needs at least one reader")
        self.readers = tuple(readers)
        self._idle: asyncio.Queue[PdfReader] = asyncio.Queue()
        for reader in self.readers:
            self._idle.put_nowait(reader)

    async def read(self, raw: bytes, what: str) -> list[Page]:
        """`PdfReader.read` on the first reader free."""
        reader = await self._idle.get()
        try:
            return await reader.read(raw, what)
        finally:
            self._idle.put_nowait(reader)

    async def aclose(self) -> None:
        for reader in self.readers:
            await reader.aclose()


async def _read_frame(stream: asyncio.StreamReader) -> bytes:
    (length,) = _LENGTH.unpack(await stream.readexactly(_LENGTH.size))
    if length > MAX_FRAME_BYTES:
        raise ReaderFailed(f"the PDF reader sent a frame of {length:,} bytes")
    return await stream.readexactly(length)


def serve(
    render: Callable[[bytes, str], list[Page]] = render_pages,
    memory_mib: int | None = None,
    source: BinaryIO | None = None,
    sink: BinaryIO | None = None,
) -> None:
    """The child: read PDFs from `source` (stdin) and answer on `sink` (stdout) until the
    gateway closes the pipe, within `memory_mib` of address space (None: no limit). What else
    writes to stdout (a library's stray print) goes to stderr instead, so it cannot break a
    frame."""
    _die_with_parent()
    if memory_mib is not None:
        limit = memory_mib * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # A crash must leave no core file: it would hold a caller's document, and could be as
    # large as the memory limit, wherever the gateway runs.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sink is None:
        sink = os.fdopen(os.dup(1), "wb")
        os.dup2(2, 1)
    source = source or sys.stdin.buffer
    # The gateway stops it by closing the pipe; a Ctrl-C in its terminal is the gateway's.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _write(sink, READY)
    while (head := _read(source)) is not None:
        raw = _read(source) or b""
        what = str(json.loads(head)["what"])
        try:
            pages = render(raw, what)
        except UnreadablePdf as exc:
            _write(sink, json.dumps({"error": str(exc)}).encode())
            continue
        except MemoryError:  # Python's side ran out; PDFium's side aborts (PdfReader.read)
            message = f"{what} needs more memory than the PDF reader's {memory_mib:,} MiB"
            _write(sink, json.dumps({"error": message}).encode())
            continue
        except Exception as exc:  # a bug: the gateway answers 500, the traceback is here
            traceback.print_exc()
            _write(sink, json.dumps({"failed": f"{type(exc).__name__}: {exc}"}).encode())
            continue
        frames = [json.dumps({"pages": len(pages)}).encode()]
        for page in pages:
            frames += [page.text.encode("utf-8"), page.picture.encode("ascii")]
        _write(sink, *frames)


def _die_with_parent() -> None:
    """Have the kernel kill this child when the gateway's thread that started it ends. The
    closed pipe ends an idle child, but not one midway through a PDF: a PDF that loops PDFium
    would keep an orphan running for as long as the machine does. (The thread, not the
    process: the gateway starts readers from its event loop, which lives as long as it does.)
    Linux only; elsewhere the pipe is the only way the child learns."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1  # <linux/prctl.h>
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def _read(source: BinaryIO) -> bytes | None:
    """One frame, or None once the gateway has closed the pipe."""
    head = source.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    body = source.read(length)
    return body if len(body) == length else None


def _write(sink: BinaryIO, *frames: bytes) -> None:
    for frame in frames:
        sink.write(_LENGTH.pack(len(frame)))
        sink.write(frame)
    sink.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description="The gateway's PDF reader (it starts it).")
    parser.add_argument("--memory-mib", type=int, help="address space limit")
    serve(memory_mib=parser.parse_args().memory_mib)


if __name__ == "__main__":
    main()

"""The PDF reader's child process, real processes throughout: it reads what PDFium reads in
this process, says why a PDF cannot be read and goes on, and a PDF that makes it hang or die
costs that one request; the next PDF gets a fresh child. tests/pdf_worker_faults.py is the
real child with faults on cue."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pdf_files import inflating_pdf, text_pdf

from gemma_fleet.gateway.pdf_process import PdfReader, PdfReaders, ReaderFailed, StopReason
from gemma_fleet.gateway.pdf_render import UnreadablePdf, render_pages

FAULTS = (sys.executable, str(Path(__file__).parents[1] / "pdf_worker_faults.py"))
REPORT = text_pdf(["Harvest of 2026", "Pears: 12 tonnes"])
STOPS: list[StopReason] = []  # what the readers made here told their on_stop


@pytest.fixture(autouse=True)
def _no_stops_yet() -> None:
    STOPS.clear()


def run(body: Callable[[Any], Awaitable[Any]], reader: PdfReader | PdfReaders | None = None) -> Any:
    """`body` on `reader` (default: one fault worker), which is closed after it."""

    async def main() -> Any:
        used = reader or PdfReader(timeout_s=10, command=FAULTS, on_stop=STOPS.append)
        try:
            return await body(used)
        finally:
            await used.aclose()

    return asyncio.run(main())


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead and not yet reaped, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_the_child_reads_what_pdfium_reads_here() -> None:
    async def body(reader: PdfReader) -> tuple[Any, str]:
        pages = await reader.read(REPORT, "doc")
        limits = await asyncio.to_thread(Path(f"/proc/{reader.pid}/limits").read_text)
        return pages, limits

    pages, limits = run(body, PdfReader(memory_mib=1024))  # the default child
    assert pages == render_pages(REPORT, "doc")
    # within its memory, and a crash leaves no core file (a caller's document)
    assert re.search(r"Max address space\s+1073741824\s+1073741824", limits)
    assert re.search(r"Max core file size\s+0\s+0", limits)


def test_an_unreadable_pdf_is_named_and_the_child_reads_on() -> None:
    async def body(reader: PdfReader) -> tuple[int | None, int | None, Any]:
        with pytest.raises(UnreadablePdf) as err:
            await reader.read(b"%PDF-1.4\n%%EOF\n", "messages[0].content[1]")
        assert str(err.value) == "messages[0].content[1] is not a readable PDF: data format error"
        first = reader.pid
        pages = await reader.read(REPORT, "doc")
        return first, reader.pid, pages

    first, then, pages = run(body)
    assert first is not None and first == then
    assert len(pages) == 2


def test_a_pdf_that_takes_too_long_is_abandoned_and_the_next_is_read() -> None:
    async def body(reader: PdfReader) -> tuple[int | None, float, int]:
        await reader.read(REPORT, "warm-up")
        slow_child = reader.pid
        started = time.monotonic()
        with pytest.raises(UnreadablePdf) as err:
            await reader.read(text_pdf(["SLOW"]), "messages[0].content[0]")
        took = time.monotonic() - started
        assert str(err.value) == (
            "messages[0].content[0] was not read within 0.5 s (a 100-page PDF takes about a "
            "second); it was abandoned"
        )
        pages = await reader.read(REPORT, "doc")
        assert reader.pid != slow_child
        return slow_child, took, len(pages)

    slow_child, took, pages = run(
        body, PdfReader(timeout_s=0.5, command=FAULTS, on_stop=STOPS.append)
    )
    assert 0.5 <= took < 3
    assert pages == 2
    assert STOPS == ["timeout"]
    assert slow_child is not None and not alive(slow_child)  # killed, not left running


def test_a_pdf_the_child_dies_on_costs_that_request_only() -> None:
    async def body(reader: PdfReader) -> tuple[Any, Any]:
        crash = reader.read(text_pdf(["CRASH"]), "messages[1].content[0]")
        after = reader.read(REPORT, "doc")  # queued behind the crash
        crashed, after_it = await asyncio.gather(crash, after, return_exceptions=True)
        return crashed, after_it

    crashed, after = run(body)
    assert isinstance(crashed, UnreadablePdf)
    assert str(crashed) == (
        "messages[1].content[0] could not be read: the PDF reader stopped on it "
        "(killed by signal 11)"
    )
    assert isinstance(after, list) and len(after) == 2
    assert STOPS == ["crash"]


def test_a_pdf_that_inflates_past_the_memory_limit_ends_the_child_not_the_gateway() -> None:
    """A 512 KB page that inflates to 512 MiB takes PDFium about twice that: under a 512 MiB
    limit the child aborts and the caller learns why it may have; the same page inflating to
    32 MiB reads within the limit, and so does the next PDF, in a fresh child."""

    async def body(reader: PdfReader) -> tuple[Any, int, int]:
        with pytest.raises(UnreadablePdf) as err:
            await reader.read(inflating_pdf(512), "messages[0].content[0]")
        small = await reader.read(inflating_pdf(32), "doc")
        return err.value, len(small), len(await reader.read(REPORT, "doc"))

    refused, small, after = run(body, PdfReader(memory_mib=512, on_stop=STOPS.append))
    assert str(refused) == (
        "messages[0].content[0] could not be read: the PDF reader stopped on it (killed by "
        "signal 6; it may need more than the reader's 512 MiB)"
    )
    assert (small, after) == (1, 2)
    assert STOPS == ["crash"]


def test_a_stray_print_in_the_child_does_not_break_the_wire() -> None:
    async def body(reader: PdfReader) -> Any:
        return await reader.read(text_pdf(["NOISE", "page two"]), "doc")

    pages = run(body)
    assert [page.text for page in pages] == ["NOISE", "page two"]
    assert STOPS == []


def test_a_read_given_up_by_its_caller_stops_the_child() -> None:
    """A client that disconnects mid-read cancels its request: the child, midway through a
    PDF nobody waits for, is stopped, and the next PDF gets a fresh one."""

    async def body(reader: PdfReader) -> tuple[int | None, int]:
        await reader.read(REPORT, "warm-up")
        child = reader.pid
        task = asyncio.create_task(reader.read(text_pdf(["SLOW"]), "doc"))
        await asyncio.sleep(0.3)  # the child is reading it
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return child, len(await reader.read(REPORT, "doc"))

    child, pages = run(body)
    assert child is not None and not alive(child)
    assert pages == 2
    assert STOPS == ["abandoned"]


def test_a_child_that_cannot_start_is_the_gateways_fault() -> None:
    async def body(reader: PdfReader) -> None:
        with pytest.raises(ReaderFailed, match=r"the PDF reader did not start \(exit status 3\)"):
            await reader.read(REPORT, "doc")

    cannot_start = (sys.executable, "-c", "import sys; sys.exit(3)")
    run(body, PdfReader(command=cannot_start, on_stop=STOPS.append))
    assert STOPS == ["fault"]


def test_the_child_ends_with_the_reader() -> None:
    async def body(reader: PdfReader) -> int | None:
        await reader.read(REPORT, "doc")
        return reader.pid

    child = run(body)  # run() closes the reader
    assert child is not None and not alive(child)
    assert STOPS == []  # not stopped midway through a PDF


def child_of_a_killed_gateway(command: tuple[str, ...] | None, last_pdf: str) -> int:
    """The pid of the reader child of a gateway process that read a PDF, then started
    reading one holding `last_pdf` and was killed 0.5 s later without any clean-up."""
    gateway = textwrap.dedent(
        f"""
        import asyncio, os, sys
        sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from pdf_files import text_pdf
        from gemma_fleet.gateway.pdf_process import PdfReader

        async def main():
            reader = PdfReader(command={command!r})
            await reader.read(text_pdf(["hello"]), "doc")
            reading = asyncio.create_task(reader.read(text_pdf([{last_pdf!r}]), "last"))
            await asyncio.sleep(0.5)
            print(reader.pid, flush=True)
            os._exit(0)

        asyncio.run(main())
        """
    )
    # Not capture_output: the child shares the gateway's stderr, and run() would wait for it.
    out = subprocess.run(
        [sys.executable, "-c", gateway],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        timeout=60,
        check=True,
    )
    return int(out.stdout)


def ends_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not alive(pid)


def test_the_child_ends_when_its_gateway_dies() -> None:
    """A gateway process killed without any clean-up, its child idle: the child ends (its
    pipe closed, and on Linux the death signal it asked for), no orphan PDFium process."""
    assert ends_within(child_of_a_killed_gateway(None, "hello again"), 10)


def test_a_child_midway_through_a_pdf_ends_when_its_gateway_dies() -> None:
    """A gateway replica killed while its child reads a PDF (Ray replacing a replica, an
    OOM kill): the child cannot notice the closed pipe until the PDF is done, which for a PDF
    that loops PDFium is never. It dies with its gateway instead of running on as an orphan
    (here the fault worker's slow PDF, which would take a minute)."""
    assert ends_within(child_of_a_killed_gateway(FAULTS, "SLOW"), 10)


def test_readers_side_by_side_read_as_many_pdfs_at_once() -> None:
    """Two readers: two slow PDFs take one PDF's time, and a third waits for the first reader
    free. (Each slow PDF takes a minute in the fault worker; the time limit ends it.)"""

    async def body(readers: PdfReaders) -> list[float]:
        async def timed(tag: str) -> float:
            started = time.monotonic()
            with pytest.raises(UnreadablePdf, match="was not read within 1 s"):
                await readers.read(text_pdf([f"SLOW {tag}"]), tag)
            return time.monotonic() - started

        for reader in readers.readers:  # started, so that start-up is not timed
            await reader.read(REPORT, "warm-up")
        return list(await asyncio.gather(timed("a"), timed("b"), timed("c")))

    a, b, c = run(body, PdfReaders([PdfReader(1.0, command=FAULTS) for _ in range(2)]))
    assert a < 1.9 and b < 1.9  # side by side
    assert c >= 2.0  # its turn came when the first reader was free

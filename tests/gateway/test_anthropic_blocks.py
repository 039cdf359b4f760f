"""Anthropic document blocks and tool results with images, through the official SDK: text
documents and PDFs (pages of text and pictures) are read as part of the user's turn (title and
context included) and counted like the rest of it; PDFs by URL, unreadable ones and uploaded
files are refused with a 400 naming the block; images a tool returned reach the model and
route the request to a pool that reads images."""

from __future__ import annotations

import base64
import io
from typing import Any, TypedDict, Unpack, cast

import anthropic
import pytest
from anthropic.types import (
    Base64ImageSourceParam,
    Base64PDFSourceParam,
    CitationsConfigParam,
    ContentBlockParam,
    ContentBlockSourceContentParam,
    DocumentBlockParam,
    ImageBlockParam,
    MessageParam,
    PlainTextSourceParam,
    SearchResultBlockParam,
    TextBlockParam,
    ToolParam,
    ToolResultBlockParam,
    ToolUseBlockParam,
    URLPDFSourceParam,
)
from anthropic.types.tool_result_block_param import Content as ToolResultContent
from gateway_harness import anthropic_error_body
from pdf_files import text_pdf
from PIL import Image


@pytest.fixture(scope="module")
def client(gateway_server: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway_server.url, api_key="unused", max_retries=0)


REPORT = "The harvest of 2026 was 41 tonnes of apples and 12 tonnes of pears. " * 8
QUESTION: TextBlockParam = {"type": "text", "text": "How many tonnes of pears?"}


class _DocumentFields(TypedDict, total=False):
    title: str
    context: str
    citations: CitationsConfigParam


def _text_document(**fields: Unpack[_DocumentFields]) -> DocumentBlockParam:
    source: PlainTextSourceParam = {"type": "text", "media_type": "text/plain", "data": REPORT}
    # strict mypy takes ** of a TypedDict into another only if it names every optional key
    return cast(DocumentBlockParam, {"type": "document", "source": source, **fields})


def _png() -> Base64ImageSourceParam:
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), "red").save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode()
    return {"type": "base64", "media_type": "image/png", "data": data}


def _user(*blocks: ContentBlockParam) -> list[MessageParam]:
    return [{"role": "user", "content": list(blocks)}]


def _sent(*blocks: ContentBlockParam) -> dict[str, Any]:
    """The user turn the gateway sends a pool for `blocks`."""
    from gemma_fleet.gateway.anthropic import to_chat_request
    from gemma_fleet.gateway.anthropic_models import MessagesRequest

    body = {"model": "gemma-4", "max_tokens": 8, "messages": _user(*blocks)}
    chat = to_chat_request(MessagesRequest.model_validate(body)).model_dump(exclude_none=True)
    message: dict[str, Any] = chat["messages"][-1]
    return message


def test_a_text_document_is_read_with_its_title_and_context(client: anthropic.Anthropic) -> None:
    document = _text_document(
        title="Harvest report", context="From the farm's 2026 ledger", citations={"enabled": True}
    )
    bare = client.messages.create(model="e2b", max_tokens=8, messages=_user(QUESTION))
    answer = client.messages.create(model="e2b", max_tokens=8, messages=_user(document, QUESTION))
    assert answer.content and answer.content[0].type == "text"
    # the document's tokens are in the prompt the model was given
    assert answer.usage.input_tokens > bare.usage.input_tokens + len(REPORT) // 8
    text = "".join(p["text"] for p in _sent(document, QUESTION)["content"])
    for shown in (REPORT, "Harvest report", "From the farm's 2026 ledger", QUESTION["text"]):
        assert shown in text
    assert text.index("Harvest report") < text.index(REPORT) < text.index(QUESTION["text"])


@pytest.mark.parametrize("model", ["gemma-4", "e4b"])
@pytest.mark.parametrize("kind", ["text", "content", "content-string"])
def test_count_tokens_counts_a_document_as_messages_create_does(
    client: anthropic.Anthropic, model: str, kind: str
) -> None:
    document: DocumentBlockParam
    if kind == "text":
        document = _text_document(title="Harvest report")
    elif kind == "content":
        blocks: list[ContentBlockSourceContentParam] = [
            {"type": "text", "text": REPORT},
            {"type": "image", "source": _png()},
        ]
        document = {"type": "document", "source": {"type": "content", "content": blocks}}
    else:
        document = {"type": "document", "source": {"type": "content", "content": REPORT}}
    messages = _user(document, QUESTION)
    counted = client.messages.count_tokens(model=model, messages=messages).input_tokens
    created = client.messages.create(model=model, max_tokens=8, messages=messages)
    assert counted == created.usage.input_tokens
    assert (
        counted > client.messages.count_tokens(model=model, messages=_user(QUESTION)).input_tokens
    )


def test_a_document_with_an_image_goes_to_a_pool_that_reads_images(
    client: anthropic.Anthropic,
) -> None:
    blocks: list[ContentBlockSourceContentParam] = [
        {"type": "text", "text": "a photo:"},
        {"type": "image", "source": _png()},
    ]
    document: DocumentBlockParam = {
        "type": "document",
        "source": {"type": "content", "content": blocks},
    }
    raw = client.messages.with_raw_response.create(
        model="gemma-4", max_tokens=8, messages=_user(document, QUESTION)
    )
    assert raw.headers["x-gemma-fleet-pool"] != "dense"  # the text-only pool
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model="dense", max_tokens=8, messages=_user(document, QUESTION))
    assert "does not take image" in anthropic_error_body(err.value)["error"]["message"]


def _pdf(raw: bytes) -> Base64PDFSourceParam:
    return {
        "type": "base64",
        "media_type": "application/pdf",
        "data": base64.b64encode(raw).decode(),
    }


PDF_SOURCES: dict[str, Base64PDFSourceParam | URLPDFSourceParam] = {
    "unreadable": _pdf(b"%PDF-1.4\n%%EOF\n"),
    # fetched as media are, under a policy that refuses loopback addresses by default
    "loopback-url": {"type": "url", "url": "http://127.0.0.1:9/report.pdf"},
}
PDF_REFUSALS = {
    "unreadable": "messages[2].content[1] is not a readable PDF: data format error",
    "loopback-url": "messages[2].content[1]: media URL host 127.0.0.1 resolves to 127.0.0.1, "
    "a loopback address",
}


def test_a_pdf_is_read_as_its_pages_text_and_pictures(client: anthropic.Anthropic) -> None:
    """Counted and metered on what the engine reads: per page its text and a picture (an
    image's 280 soft tokens and two boundaries in the simulated pool)."""

    def tokens(*blocks: ContentBlockParam) -> tuple[int, int]:
        messages = _user(*blocks, QUESTION)
        counted = client.messages.count_tokens(model="e2b", messages=messages).input_tokens
        used = client.messages.create(model="e2b", max_tokens=8, messages=messages).usage
        return counted, used.input_tokens

    report: DocumentBlockParam = {
        "type": "document", "source": _pdf(text_pdf([REPORT[:80], REPORT[80:160]])),
        "title": "Harvest report",
    }  # fmt: skip
    question, with_pdf = tokens(), tokens(report)
    assert with_pdf[0] == with_pdf[1]  # count_tokens says what a generation is metered
    assert with_pdf[1] > question[1] + 2 * (280 + 2) + 160 // 4


@pytest.mark.parametrize("source", list(PDF_SOURCES))
def test_a_pdf_it_cannot_read_is_refused_naming_the_block(
    client: anthropic.Anthropic, source: str
) -> None:
    pdf: DocumentBlockParam = {
        "type": "document",
        "source": PDF_SOURCES[source],
        "title": "report.pdf",
    }
    messages: list[MessageParam] = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": [QUESTION, pdf]},
    ]
    for call in (
        lambda: client.messages.create(
            model="gemma-4", max_tokens=8, system="Be brief.", messages=messages
        ),
        lambda: client.messages.count_tokens(model="gemma-4", messages=messages),
    ):
        with pytest.raises(anthropic.BadRequestError) as err:
            call()
        error = anthropic_error_body(err.value)["error"]
        assert error["type"] == "invalid_request_error"
        # the block's place in the caller's request, which the system prompt does not shift
        assert error["message"].startswith(PDF_REFUSALS[source])


def test_a_bad_image_is_refused_naming_its_block(client: anthropic.Anthropic) -> None:
    """By its place in the Anthropic request (a system prompt shifts the chat request's
    messages by one), and without naming a data URL the caller never sent."""
    garbage = base64.b64encode(b"not an image").decode()
    image: ImageBlockParam = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": garbage},
    }
    in_document: DocumentBlockParam = {
        "type": "document",
        "source": {"type": "content", "content": [{"type": "text", "text": "Map:"}, image]},
    }
    messages: list[MessageParam] = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
    ]
    cases: list[tuple[list[ContentBlockParam], str]] = [
        ([QUESTION, image], "messages[2].content[1]"),
        ([in_document, QUESTION], "messages[2].content[0].source.content[1]"),
    ]
    for blocks, where in cases:
        with pytest.raises(anthropic.BadRequestError) as err:
            client.messages.create(
                model="e2b",
                max_tokens=8,
                system="Be brief.",
                messages=[*messages, {"role": "user", "content": blocks}],
            )
        assert anthropic_error_body(err.value)["error"]["message"] == (
            f"{where}: not a decodable image: no image format recognised"
        )


def test_a_file_document_is_refused_naming_the_block(client: anthropic.Anthropic) -> None:
    document: DocumentBlockParam = {
        "type": "document",
        "source": {"type": "file", "file_id": "file_011abc"},
    }
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model="gemma-4", max_tokens=8, messages=_user(document))
    message = anthropic_error_body(err.value)["error"]["message"]
    assert "messages[0].content[0]" in message and "Files API" in message


def test_a_document_is_refused_in_an_assistant_turn(client: anthropic.Anthropic) -> None:
    messages: list[MessageParam] = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [_text_document()]},
        {"role": "user", "content": "Go on"},
    ]
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model="gemma-4", max_tokens=8, messages=messages)
    assert "document" in anthropic_error_body(err.value)["error"]["message"]


# ---- images inside tool_result ----------------------------------------------------------------

SHOT_TOOL: ToolParam = {
    "name": "screenshot",
    "description": "the screen",
    "input_schema": {"type": "object"},
}


class _ResultFields(TypedDict, total=False):
    is_error: bool


def _after_screenshot(
    *result: ToolResultContent, **fields: Unpack[_ResultFields]
) -> list[MessageParam]:
    use: ToolUseBlockParam = {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "screenshot",
        "input": {},
    }
    # strict mypy takes ** of a TypedDict into another only if it names every optional key
    answer = cast(
        ToolResultBlockParam,
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": list(result), **fields},
    )
    return [
        {"role": "user", "content": "What is on my screen?"},
        {"role": "assistant", "content": [use]},
        {"role": "user", "content": [answer]},
    ]


def test_an_image_a_tool_returned_reaches_the_model(client: anthropic.Anthropic) -> None:
    caption: TextBlockParam = {"type": "text", "text": "the screen now"}
    image: ImageBlockParam = {"type": "image", "source": _png()}
    with_image = _after_screenshot(caption, image)
    text_only = _after_screenshot(caption)
    answer = client.messages.create(
        model="gemma-4", max_tokens=8, tools=[SHOT_TOOL], messages=with_image
    )
    bare = client.messages.create(
        model="gemma-4", max_tokens=8, tools=[SHOT_TOOL], messages=text_only
    )
    assert answer.content
    # an image is 280 soft tokens plus its two delimiters on Gemma 4 (the simulator's too)
    assert answer.usage.input_tokens - bare.usage.input_tokens >= 280
    counted = client.messages.count_tokens(model="gemma-4", tools=[SHOT_TOOL], messages=with_image)
    assert counted.input_tokens == answer.usage.input_tokens


def test_an_image_a_tool_returned_goes_only_to_pools_that_read_images(
    client: anthropic.Anthropic,
) -> None:
    messages = _after_screenshot({"type": "image", "source": _png()}, is_error=True)
    raw = client.messages.with_raw_response.create(
        model="gemma-4", max_tokens=8, tools=[SHOT_TOOL], messages=messages
    )
    assert raw.headers["x-gemma-fleet-pool"] != "dense"  # the text-only pool
    for call in (
        lambda: client.messages.create(
            model="dense", max_tokens=8, tools=[SHOT_TOOL], messages=messages
        ),
        lambda: client.messages.count_tokens(model="dense", tools=[SHOT_TOOL], messages=messages),
    ):
        with pytest.raises(anthropic.BadRequestError) as err:
            call()
        assert "does not take image" in anthropic_error_body(err.value)["error"]["message"]


def test_a_tool_results_image_follows_its_text_response() -> None:
    from gemma_fleet.gateway.anthropic import to_chat_request
    from gemma_fleet.gateway.anthropic_models import MessagesRequest

    image: ImageBlockParam = {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/s.png"},
    }
    messages = _after_screenshot({"type": "text", "text": "a window"}, image)
    body = {"model": "e2b", "max_tokens": 8, "tools": [SHOT_TOOL], "messages": messages}
    chat = to_chat_request(MessagesRequest.model_validate(body)).model_dump(exclude_none=True)
    assert chat["messages"][2:] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "a window"},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/s.png"}}]},
    ]  # fmt: skip


def test_a_document_a_tool_returned_is_read_and_a_bad_pdf_refused(
    client: anthropic.Anthropic,
) -> None:
    found = _after_screenshot(_text_document(title="Harvest report"))
    answer = client.messages.create(model="e2b", max_tokens=8, tools=[SHOT_TOOL], messages=found)
    bare = client.messages.create(
        model="e2b", max_tokens=8, tools=[SHOT_TOOL], messages=_after_screenshot()
    )
    assert answer.usage.input_tokens > bare.usage.input_tokens + len(REPORT) // 8
    pdf: DocumentBlockParam = {"type": "document", "source": PDF_SOURCES["unreadable"]}
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(
            model="e2b", max_tokens=8, tools=[SHOT_TOOL], messages=_after_screenshot(pdf)
        )
    assert (
        "messages[2].content[0].content[0]" in anthropic_error_body(err.value)["error"]["message"]
    )


def test_a_pdf_a_tool_returned_follows_its_response_inside_its_tags(
    client: anthropic.Anthropic,
) -> None:
    """A PDF in a tool's result goes, tags and pages, into the user turn after the tool's
    response: before, its empty <document> tags stayed in the response and its pages came
    after them, untagged. A text document stays in the response (test above)."""
    from gemma_fleet.gateway.anthropic import to_chat_request
    from gemma_fleet.gateway.anthropic_models import MessagesRequest

    report: DocumentBlockParam = {
        "type": "document", "source": _pdf(text_pdf([REPORT[:80]])), "title": "Harvest report",
    }  # fmt: skip
    messages = _after_screenshot({"type": "text", "text": "found it"}, report)
    body = {"model": "e2b", "max_tokens": 8, "tools": [SHOT_TOOL], "messages": messages}
    chat = to_chat_request(MessagesRequest.model_validate(body)).model_dump(exclude_none=True)
    tool, user = chat["messages"][2:]
    assert tool == {"role": "tool", "tool_call_id": "toolu_1", "content": "found it"}
    head, pdf, end = user["content"]
    assert head["text"] == "<document>\n<title>Harvest report</title>\n<document_content>\n"
    assert pdf["type"] == "file"
    assert end["text"] == "\n</document_content>\n</document>"
    # read into its page's text and picture, counted as it is metered
    used = client.messages.create(model="e2b", max_tokens=8, tools=[SHOT_TOOL], messages=messages)
    bare = client.messages.create(
        model="e2b", max_tokens=8, tools=[SHOT_TOOL], messages=_after_screenshot()
    )
    assert used.usage.input_tokens > bare.usage.input_tokens + 280 + 80 // 4
    counted = client.messages.count_tokens(model="e2b", tools=[SHOT_TOOL], messages=messages)
    assert counted.input_tokens == used.usage.input_tokens


# ---- search_result blocks ----------------------------------------------------------------------

PASSAGES = [
    "Orchard yields rose in 2026: pears reached 12 tonnes. " * 6,
    "Apples held at 41 tonnes.",
]


def _search_result(**fields: Any) -> SearchResultBlockParam:
    # fields: more of the block's keys, which mypy cannot check through **
    return cast(
        SearchResultBlockParam,
        {
            "type": "search_result",
            "source": "https://farm.example/reports/2026",
            "title": "Harvest report 2026",
            "content": [{"type": "text", "text": p} for p in PASSAGES],
            "citations": {"enabled": True},
            **fields,
        },
    )


def test_a_search_result_is_read_with_its_source_and_title(client: anthropic.Anthropic) -> None:
    found = _search_result()
    bare = client.messages.create(model="e2b", max_tokens=8, messages=_user(QUESTION))
    answer = client.messages.create(model="e2b", max_tokens=8, messages=_user(found, QUESTION))
    assert answer.content and answer.content[0].type == "text"
    assert not getattr(answer.content[0], "citations", None)  # accepted, none given back
    assert answer.usage.input_tokens > bare.usage.input_tokens + len(PASSAGES[0]) // 8
    text = "".join(p["text"] for p in _sent(found, QUESTION)["content"])
    order = [found["source"], found["title"], PASSAGES[0], PASSAGES[1], QUESTION["text"]]
    assert [text.index(shown) for shown in order] == sorted(text.index(s) for s in order)
    assert PASSAGES[0] + PASSAGES[1] not in text  # the passages stay apart


def test_count_tokens_counts_a_search_result_as_messages_create_does(
    client: anthropic.Anthropic,
) -> None:
    messages = _user(_search_result(), QUESTION)
    counted = client.messages.count_tokens(model="gemma-4", messages=messages).input_tokens
    created = client.messages.create(model="gemma-4", max_tokens=8, messages=messages)
    assert counted == created.usage.input_tokens
    bare = client.messages.count_tokens(model="gemma-4", messages=_user(QUESTION)).input_tokens
    assert counted > bare + len(PASSAGES[0]) // 8


def test_a_search_result_a_tool_returned_is_read(client: anthropic.Anthropic) -> None:
    search: ToolParam = {
        "name": "search",
        "description": "web search",
        "input_schema": {"type": "object"},
    }
    use: ToolUseBlockParam = {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {}}

    def after(*result: ToolResultContent) -> list[MessageParam]:
        answer: ToolResultBlockParam = {
            "type": "tool_result",
            "tool_use_id": "toolu_1",
            "content": list(result),
        }
        return [
            {"role": "user", "content": "How many tonnes of pears?"},
            {"role": "assistant", "content": [use]},
            {"role": "user", "content": [answer]},
        ]

    found = after({"type": "text", "text": "1 result"}, _search_result())
    answer = client.messages.create(model="e2b", max_tokens=8, tools=[search], messages=found)
    bare = client.messages.create(model="e2b", max_tokens=8, tools=[search], messages=after())
    assert answer.usage.input_tokens > bare.usage.input_tokens + len(PASSAGES[0]) // 8
    counted = client.messages.count_tokens(model="e2b", tools=[search], messages=found)
    assert counted.input_tokens == answer.usage.input_tokens
    from gemma_fleet.gateway.anthropic import to_chat_request
    from gemma_fleet.gateway.anthropic_models import MessagesRequest

    body = {"model": "e2b", "max_tokens": 8, "tools": [search], "messages": found}
    chat = to_chat_request(MessagesRequest.model_validate(body)).model_dump(exclude_none=True)
    [tool] = [m for m in chat["messages"] if m["role"] == "tool"]
    assert tool["content"].startswith("1 result")
    for shown in ("https://farm.example/reports/2026", "Harvest report 2026", *PASSAGES):
        assert shown in tool["content"]


MALFORMED: dict[str, tuple[dict[str, Any], str]] = {
    "no source": ({"source": None}, "source"),
    "no title": ({"title": None}, "title"),
    "no content": ({"content": None}, "content"),
    "empty content": ({"content": []}, "content"),
    "an image in content": ({"content": [{"type": "image", "source": _png()}]}, "content"),
    "a string content": ({"content": "pears: 12 tonnes"}, "content"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_search_result_is_refused_naming_the_block(
    client: anthropic.Anthropic, case: str
) -> None:
    change, field = MALFORMED[case]
    # a malformed search_result, which the SDK's types rightly refuse: it is sent as it is
    block = {k: v for k, v in {**_search_result(), **change}.items() if v is not None}
    in_tool: ToolResultBlockParam = {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "content": [{"type": "text", "text": "found:"}, QUESTION, block],  # type: ignore[list-item]
    }
    use: ToolUseBlockParam = {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {}}
    search: ToolParam = {"name": "search", "input_schema": {"type": "object"}}
    cases: tuple[tuple[list[MessageParam], str], ...] = (
        (_user(QUESTION, block), "messages[0].content[1]"),  # type: ignore[arg-type]
        (
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": [use]},
             {"role": "user", "content": [in_tool]}],
            "messages[2].content[0].content[2]",
        ),
    )  # fmt: skip
    for messages, where in cases:
        for count in (False, True):
            with pytest.raises(anthropic.BadRequestError) as err:
                if count:
                    client.messages.count_tokens(model="gemma-4", tools=[search], messages=messages)
                else:
                    client.messages.create(
                        model="gemma-4", max_tokens=8, tools=[search], messages=messages
                    )
            error = anthropic_error_body(err.value)["error"]
            assert error["type"] == "invalid_request_error"
            assert f"{where}.{field}" in error["message"], error["message"]
            if case == "an image in content":
                assert "content[0] has type 'image'" in error["message"]


def test_a_search_result_is_refused_in_an_assistant_turn(client: anthropic.Anthropic) -> None:
    messages: list[MessageParam] = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [_search_result()]},
        {"role": "user", "content": "Go on"},
    ]
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model="gemma-4", max_tokens=8, messages=messages)
    assert "search_result" in anthropic_error_body(err.value)["error"]["message"]

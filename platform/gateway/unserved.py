"""Fields of the OpenAI and Anthropic APIs that Gemma pools cannot honour.

Refused by name, with why and what to send instead: as unknown fields ("Unrecognized request
argument") they puzzled a client reading the provider's own reference, where they exist.
"""

from __future__ import annotations

from typing import Any

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

# The error type `errors.validation_error` words as "<field> is not served by this gateway".
UNSERVED = "unserved"


def unserved(reason: str) -> AfterValidator:
    """The validator of a field this gateway refuses whenever it is set (null is accepted, as
    the SDKs send it); `reason` says why and what to send instead."""

    def refuse(value: Any) -> None:
        if value is not None:
            raise PydanticCustomError(UNSERVED, reason)

    return AfterValidator(refuse)


def served_kinds(served: tuple[str | None, ...], reason: str) -> AfterValidator:
    """The validator of a `type` of which only `served` are: another is refused by name,
    `reason` a message with `{kind}` for the value sent (a tool a provider runs on its own
    platform got "Input should be 'function'", which says what is accepted but not why)."""

    def refuse(value: Any) -> Any:
        if value not in served:
            raise PydanticCustomError(UNSERVED, reason, {"kind": repr(value)})
        return value

    return AfterValidator(refuse)

"""The process environment a local fleet changes and gives back. The nodes, replicas and engines
a fleet starts read their settings from variables they inherit; a process that runs one fleet
after another (a test session, a notebook) must not carry one fleet's settings into the next
Ray cluster it starts.

Only the variables named are given back: libraries imported meanwhile (Ray, torch, OpenCV) set
variables of their own at import and rely on them staying."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager


def set_environment(
    values: Mapping[str, str] | None = None, *, defaults: Mapping[str, str] | None = None
) -> Callable[[], None]:
    """Set `values`, and each of `defaults` that is not set yet (a user's own setting wins).
    Returns the function that puts every variable named back as it was."""
    values, defaults = dict(values or {}), dict(defaults or {})
    saved = {key: os.environ.get(key) for key in {*values, *defaults}}
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    os.environ.update(values)

    def restore() -> None:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    return restore


@contextmanager
def scoped_environment(
    values: Mapping[str, str] | None = None, *, defaults: Mapping[str, str] | None = None
) -> Iterator[None]:
    """`set_environment` for the duration of the block."""
    restore = set_environment(values, defaults=defaults)
    try:
        yield
    finally:
        restore()

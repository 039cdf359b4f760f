"""Reading the YAML files users write (fleet, controller settings, demand and trace files,
measured profiles, load-test workloads, team bootstrap, the catalog) with one set of errors:
every message starts with the file and names the field at fault, never a traceback.

Each caller passes its own exception type, so a CLI can catch the one its command reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: Path, error: type[Exception], kind: str, *, mapping: bool = True) -> Any:
    """The parsed YAML at `path` (an empty file reads as {}); `error` naming the file when it
    cannot be read or parsed, or, with `mapping`, when its top level is not a mapping."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise error(f"{path}: cannot read the {kind}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if mapping and not isinstance(data, dict):
        raise error(f"{path}: the {kind} must be a mapping at its top level")
    if (at := _not_finite(data)) is not None:
        raise error(f"{path}: {at}: not a finite number (YAML's .nan or .inf)")
    return data


def _not_finite(data: Any, at: str = "") -> str | None:
    """Where in `data` the first NaN or infinity is, or None. YAML writes them .nan and .inf;
    no setting of ours means either, and `.inf` passes a `ge=0` bound (a node pool costing
    .inf reached the planner's solver as a traceback)."""
    if isinstance(data, float) and not math.isfinite(data):
        return at or "top level"
    if isinstance(data, dict):
        items: Any = data.items()
    else:
        items = enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        # dotted, list indices included, as pydantic names fields in the other errors
        if (found := _not_finite(value, f"{at}.{key}" if at else str(key))) is not None:
            return found
    return None


def problem(exc: ValidationError, kind: str, where: Callable[[str], str] = str) -> str:
    """`field.path: message` for the first problem pydantic found, with how many more; an
    unknown key is called one (`where` may shorten the field path for the reader)."""
    errors = exc.errors()
    first = errors[0]
    at = where(".".join(str(p) for p in first["loc"])) or "top level"
    if first["type"] == "extra_forbidden":
        message = f"unknown key (not a {kind} field)"
    else:
        message = str(first["msg"]).removeprefix("Value error, ")
    extra = len(errors) - 1
    more = f" (and {extra} more problem{'s' if extra > 1 else ''})" if extra else ""
    return f"{at}: {message}{more}"


def load_model(
    path: Path | str,
    model: type[M],
    error: type[Exception],
    kind: str,
    *,
    where: Callable[[str], str] = str,
) -> M:
    """`path` read (read_yaml) and validated as `model`; `error` naming the file and field."""
    path = Path(path)
    data = read_yaml(path, error, kind)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{path}: {problem(exc, kind, where)}") from None

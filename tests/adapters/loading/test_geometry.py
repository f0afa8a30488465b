"""A model's geometry (family, latent cell, native window) read from its configs without its weights equals what the
loaded model reports, for every family the tests can build; sources whose configs are not at hand give None."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from multidiffusion.adapters import load_model
from multidiffusion.adapters.loading.geometry import ModelGeometry, geometry_before_loading, geometry_of
from tests.helpers.family_folders import save_family_folders

SD_KEY = "model.diffusion_model.output_blocks.11.0.skip_connection.weight"  # what diffusers reads as SD 1.x


@pytest.fixture(scope="module")
def family_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A saved tiny SDXL, SD 3 and Flux model folder."""
    return save_family_folders(tmp_path_factory.mktemp("families"))


def test_toy_spec_geometry_is_its_models():
    for spec in ("toy", "toy:ell=2,max_window=128"):
        read = geometry_before_loading(spec)
        assert read == geometry_of(load_model(spec, device="cpu"))
        assert read == ModelGeometry("gaussian-field", 1, 64, 16)


def test_sd_folder_geometry_equals_the_loaded_models(small_folder):
    read = geometry_before_loading(str(small_folder))
    assert read == geometry_of(load_model(str(small_folder), device="cpu"))
    assert read == ModelGeometry("stable-diffusion", 8, 16) and read.native_px == 128


@pytest.mark.parametrize(("name", "family", "cell"), [("sdxl", "sdxl", 8), ("sd3", "sd3", 16), ("flux", "flux", 16)])
def test_family_folder_geometry_equals_the_loaded_models(family_folders, name, family, cell):
    folder = str(family_folders[name])
    read = geometry_before_loading(folder)
    loaded = geometry_of(load_model(folder, device="cpu"))
    assert read == loaded
    assert read is not None and read.family == loaded.family and read.granularity_px == cell


def _sd_checkpoint(path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({SD_KEY: torch.zeros(4, 4, 1, 1)}, str(path))
    return path


def test_single_file_geometry_comes_from_its_config_folder(tmp_path, small_folder, family_folders):
    """A .safetensors checkpoint's geometry is its --config folder's, when the checkpoint's own family (from its
    tensor names) is the folder's; without a config, or from a pickled file, it is not read before loading."""
    checkpoint = _sd_checkpoint(tmp_path / "model.safetensors")
    assert geometry_before_loading(str(checkpoint)) is None
    assert geometry_before_loading(str(checkpoint), str(small_folder)) == geometry_before_loading(str(small_folder))
    assert geometry_before_loading(str(checkpoint), str(family_folders["sd3"])) is None  # families disagree
    pickled = tmp_path / "model.ckpt"
    pickled.write_bytes(b"not read")
    assert geometry_before_loading(str(pickled), str(small_folder)) is None


def test_unreadable_configs_give_none(tmp_path, small_folder):
    broken = tmp_path / "broken"
    shutil.copytree(small_folder, broken, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    (broken / "vae" / "config.json").write_text("[1, 2]")
    assert geometry_before_loading(str(broken)) is None
    (broken / "vae" / "config.json").write_text("{}")
    assert geometry_before_loading(str(broken)) is None
    (broken / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyPipeline"}))
    assert geometry_before_loading(str(broken)) is None


def _cache_repo(cache: Path, repo: str, folder: Path, names: list[str]) -> None:
    """A hub cache holding ``names`` of ``folder`` as the snapshot of ``repo``."""
    entry = cache / f"models--{repo.replace('/', '--')}"
    snapshot = entry / "snapshots" / ("0" * 40)
    for name in names:
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / name, snapshot / name)
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text("0" * 40)


CONFIGS = ["model_index.json", "vae/config.json", "unet/config.json"]


def test_a_cached_repo_id_is_read_offline_without_weights(tmp_path, small_folder, monkeypatch):
    import huggingface_hub
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    _cache_repo(cache, "someone/tiny-sd", small_folder, CONFIGS)
    _cache_repo(cache, "someone/half", small_folder, CONFIGS[:1])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def no_network(*args, **kwargs):
        raise AssertionError("the network was used offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    assert geometry_before_loading("someone/tiny-sd") == geometry_before_loading(str(small_folder))
    assert geometry_before_loading("someone/half") is None  # its VAE and UNet configs were never downloaded
    assert geometry_before_loading("someone/not-downloaded") is None


def test_online_only_the_small_configs_are_downloaded(tmp_path, small_folder, monkeypatch):
    """Online, a repo id's missing configs are fetched (a few kB), never a weight file; a failed fetch gives None."""
    import huggingface_hub
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    _cache_repo(cache, "someone/tiny-sd", small_folder, CONFIGS[:1])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    asked = []

    def download(repo_id, filename, **kwargs):
        asked.append((repo_id, filename))
        if repo_id != "someone/tiny-sd":
            raise OSError("no network")
        return str(small_folder / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    assert geometry_before_loading("someone/tiny-sd") == geometry_before_loading(str(small_folder))
    assert sorted(asked) == [("someone/tiny-sd", "unet/config.json"), ("someone/tiny-sd", "vae/config.json")]
    assert all(name.endswith(".json") for _, name in asked)
    assert geometry_before_loading("someone/unreachable") is None
    assert geometry_before_loading("someone/unreachable", fetch=False) is None
    assert asked[-1] == ("someone/unreachable", "model_index.json") and len(asked) == 3

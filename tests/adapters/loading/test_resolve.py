"""The real loading code (``from_pretrained``, ``from_single_file``) on folders the tests save themselves."""

from __future__ import annotations

import pytest
import torch

from multidiffusion.adapters.loading.resolve import (
    check_model_source,
    looks_like_repo_id,
    resolve_device,
    resolve_dtype,
)
from multidiffusion.core import InvalidInputError
from multidiffusion.pipeline import MultiDiffusionPipeline


def test_from_pretrained_folder_equals_in_memory_components(small_folder, small_pipe):
    pipe = MultiDiffusionPipeline.from_pretrained(str(small_folder), dtype="float32", device="cpu")
    assert pipe.model.native_window == 16 and pipe.native_window_px == 128
    assert pipe.model.granularity_px == 8 and pipe.model.dtype == torch.float32
    kwargs = dict(height=128, width=256, num_inference_steps=2, output_type="latent", progress=False)
    ours = pipe("sky", generator=torch.Generator().manual_seed(0), **kwargs).latents
    ref = small_pipe("sky", generator=torch.Generator().manual_seed(0), **kwargs).latents
    assert torch.equal(ours, ref)


def test_from_pretrained_bfloat16(small_folder):
    pipe = MultiDiffusionPipeline.from_pretrained(str(small_folder), dtype="bfloat16", device="cpu")
    out = pipe("sky", height=128, width=128, num_inference_steps=1, output_type="latent", progress=False)
    assert pipe.model.dtype == torch.bfloat16 and out.latents.dtype == torch.float32
    assert bool(torch.isfinite(out.latents).all())


def test_from_single_file_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        MultiDiffusionPipeline.from_single_file(str(tmp_path / "none.safetensors"), device="cpu")
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidInputError, match="could not load checkpoint"):
        MultiDiffusionPipeline.from_single_file(str(bogus), device="cpu")


def test_model_source_checks(tmp_path, small_folder):
    check_model_source(str(small_folder))
    check_model_source("stabilityai/stable-diffusion-2-base")
    with pytest.raises(InvalidInputError, match="holds no diffusers model"):
        check_model_source(str(tmp_path))
    with pytest.raises(InvalidInputError, match="does not exist"):
        check_model_source("./missing/model")
    assert looks_like_repo_id("org/name-1.5") and not looks_like_repo_id("../x") and not looks_like_repo_id("a/b/c")


def test_device_and_dtype_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype(None, torch.device("cuda")) == torch.float16
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(InvalidInputError, match="unknown dtype"):
        resolve_dtype("int8", torch.device("cpu"))
    with pytest.raises(InvalidInputError, match="unknown device"):
        resolve_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInputError, match="CUDA is not available"):
            resolve_device("cuda")


def test_scheduler_config_is_read_before_loading_from_folders_configs_and_the_hub_cache(
    tmp_path, small_folder, monkeypatch
):
    """The step limit can be checked before a model loads wherever its scheduler config is on disk: a folder, the
    --config folder of a checkpoint file, or a repo id already in the hub cache (the network is never used)."""
    import json

    import huggingface_hub.constants

    from multidiffusion.adapters.loading.resolve import scheduler_config_before_loading

    expected = json.loads((small_folder / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler_config_before_loading(str(small_folder)) == expected
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"")
    assert scheduler_config_before_loading(str(checkpoint)) is None
    assert scheduler_config_before_loading(str(checkpoint), config=str(small_folder)) == expected

    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--tiny-sd" / "snapshots" / ("0" * 40)
    (snapshot / "scheduler").mkdir(parents=True)
    (snapshot / "scheduler" / "scheduler_config.json").write_text(json.dumps(expected))
    (cache / "models--someone--tiny-sd" / "refs").mkdir()
    (cache / "models--someone--tiny-sd" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    assert scheduler_config_before_loading("someone/tiny-sd") == expected
    assert scheduler_config_before_loading("someone/not-downloaded") is None
    assert scheduler_config_before_loading("not a repo id") is None


def test_pickled_weights_need_allow_pickle(tmp_path, small, small_pipe):
    """A .ckpt/.pt/.pth/.bin checkpoint, or a folder whose parts are stored only as pickles, is refused before
    anything is read unless allow_pickle=True; allowed, the pickled folder loads and runs as its safetensors twin."""
    from diffusers import StableDiffusionPipeline

    from multidiffusion.adapters.loading.resolve import check_model_source

    for suffix in (".ckpt", ".pt", ".pth", ".bin"):
        file = tmp_path / f"model{suffix}"
        file.write_bytes(b"never unpickled")
        with pytest.raises(InvalidInputError, match=r"is a pickle file, which can run code.*--allow-pickle"):
            check_model_source(str(file))
        check_model_source(str(file), allow_pickle=True)  # allowed: the name is fine (loading would read it)

    folder = tmp_path / "pickled"
    extras = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    StableDiffusionPipeline(**small, **extras).save_pretrained(folder, safe_serialization=False)
    with pytest.raises(InvalidInputError, match=r"stores unet, vae only as pickle files.*--allow-pickle"):
        MultiDiffusionPipeline.from_pretrained(str(folder))
    pipe = MultiDiffusionPipeline.from_pretrained(str(folder), allow_pickle=True)
    kwargs = dict(height=128, width=128, num_inference_steps=2, output_type="latent", progress=False)
    out = pipe("sky", generator=torch.Generator().manual_seed(0), **kwargs)
    expected = small_pipe("sky", generator=torch.Generator().manual_seed(0), **kwargs)
    assert torch.equal(out.latents, expected.latents)


@pytest.mark.parametrize(
    ("index", "message"),
    [
        ("[1, 2]", "holds a JSON array, not an object naming the pipeline"),
        ("42", "holds a JSON number"),
        ("{}", "names no pipeline (_class_name)"),
        ('{"_class_name": "KandinskyV22Pipeline"}', "which this tool does not run"),
    ],
)
def test_a_folder_whose_model_index_is_no_pipeline_is_refused_before_loading(tmp_path, index, message):
    """The cheap check reads model_index.json (1 kB) itself, so the API and the command line refuse it alike."""
    (tmp_path / "model_index.json").write_text(index)
    for attempt in (
        lambda: check_model_source(str(tmp_path)),
        lambda: MultiDiffusionPipeline.from_pretrained(str(tmp_path)),
    ):
        with pytest.raises(InvalidInputError) as caught:
            attempt()
        assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("library", ["evil_module", "os", "../evil_module", 7])
def test_a_component_from_any_library_but_diffusers_or_transformers_is_refused_before_loading(
    tmp_path, small_folder, library
):
    """diffusers imports the module a component names; one shipped in the folder must never run."""
    import json
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(small_folder, folder)
    marker = tmp_path / "ran"
    (folder / "evil_module.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Evil: pass\n")
    index = json.loads((folder / "model_index.json").read_text())
    index["feature_extractor"] = [library, "Evil"]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(InvalidInputError, match="only diffusers and transformers components are loaded"):
        check_model_source(str(folder))
    with pytest.raises(InvalidInputError, match="only diffusers and transformers components are loaded"):
        MultiDiffusionPipeline.from_pretrained(str(folder))
    assert not marker.exists()


def test_a_diffusers_pipeline_module_component_is_accepted(tmp_path, small_folder):
    """SD's own model_index names its safety checker ``["stable_diffusion", "StableDiffusionSafetyChecker"]``."""
    import json

    from multidiffusion.adapters.families.registry import check_component_libraries

    index = json.loads((small_folder / "model_index.json").read_text())
    index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
    check_component_libraries(index, "sd")

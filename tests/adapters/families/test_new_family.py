"""A model family is its module plus one registry line: two families defined only in the tests
(extra_files_family.py, extra_spec_family.py) are added to ``registry.REGISTRY`` and nothing else, and then load
through ``load_model`` and ``MultiDiffusionPipeline.from_pretrained`` like the shipped ones."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from multidiffusion.adapters import check_model_source, load_model
from multidiffusion.adapters.customise.host import diffusers_host
from multidiffusion.adapters.families import registry
from multidiffusion.adapters.loading.resolve import scheduler_config_before_loading
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.pipeline import MultiDiffusionPipeline
from tests.adapters.families import extra_files_family, extra_spec_family

RUN = dict(height=128, width=256, num_inference_steps=2, output_type="latent", progress=False)
TOY_RUN = dict(RUN, height=64, width=128)


@pytest.fixture()
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry with the two test families after the shipped ones: the one change a new family makes."""
    monkeypatch.setattr(registry, "REGISTRY", (*registry.REGISTRY, extra_files_family.FAMILY, extra_spec_family.FAMILY))


@pytest.fixture()
def panorama_folder(small_folder, tmp_path):
    """The small SD model saved as a folder whose model_index.json names diffusers' panorama pipeline."""
    folder = shutil.copytree(small_folder, tmp_path / "tiny-sd-panorama")
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = extra_files_family.PIPELINE
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def test_a_file_family_loads_once_registered(panorama_folder, small_folder, monkeypatch):
    with pytest.raises(InvalidInputError, match="StableDiffusionPanoramaPipeline, which this tool does not run"):
        load_model(str(panorama_folder), device="cpu")
    monkeypatch.setattr(registry, "REGISTRY", (*registry.REGISTRY, extra_files_family.FAMILY))

    pipe = MultiDiffusionPipeline.from_pretrained(str(panorama_folder), device="cpu")
    assert pipe.model.family == "sd-panorama"
    assert extra_files_family.FAMILY.title in registry.supported()  # errors list it with the shipped families
    # the family's first pipeline is where its add-ons load: diffusers' panorama pipeline around the same modules
    host = diffusers_host(pipe.model)
    assert type(host).__name__ == extra_files_family.PIPELINE and host.unet is pipe.model.components["unet"]
    # the same weights as the SD family's: the same canvas, bit for bit
    ours = pipe("a red barn", generator=torch.Generator().manual_seed(3), **RUN).latents
    sd = MultiDiffusionPipeline.from_pretrained(str(small_folder), device="cpu")
    assert sd.model.family == "stable-diffusion"
    assert torch.equal(ours, sd("a red barn", generator=torch.Generator().manual_seed(3), **RUN).latents)


def test_a_spec_family_claims_its_strings_once_registered(monkeypatch):
    with pytest.raises(InvalidInputError, match="does not exist"):
        check_model_source("mono:ell=2")
    monkeypatch.setattr(registry, "REGISTRY", (*registry.REGISTRY, extra_spec_family.FAMILY))

    check_model_source("mono:ell=2")
    with pytest.raises(InvalidInputError, match="unknown toy model option 'size'"):
        check_model_source("mono:size=2")  # the family's own checks, before anything loads
    assert scheduler_config_before_loading("mono:prediction=v_prediction")["prediction_type"] == "v_prediction"
    pipe = MultiDiffusionPipeline.from_pretrained("mono:ell=2", device="cpu")
    assert (pipe.model.family, pipe.model.name) == ("mono-field", "mono:ell=2")
    out = pipe("red", generator=torch.Generator().manual_seed(3), **TOY_RUN)
    toy = MultiDiffusionPipeline.from_pretrained("toy:ell=2", device="cpu")
    expected = toy("red", generator=torch.Generator().manual_seed(3), **TOY_RUN)
    assert torch.equal(out.latents, expected.latents)
    assert out.metadata.model == "mono:ell=2"


def test_shipped_families_are_found_by_their_declarations(registered):
    """Every lookup reads the registry's FAMILY objects: names, pipelines, checkpoint types, spec strings."""
    assert registry.family_claiming("toy:ell=3").name == "gaussian-field"
    assert registry.family_claiming("mono").name == "mono-field"
    assert registry.family_claiming("stabilityai/sdxl-turbo") is None
    assert registry.family_of_pipeline("StableDiffusionXLPipeline", "x").name == "sdxl"
    assert registry.family_named("sd3").checkpoint_types == ("sd3", "sd35_medium", "sd35_large")
    assert [f.name for f in registry.file_families()] == ["stable-diffusion", "sdxl", "sd3", "flux", "sd-panorama"]
    kinds = [k.class_name for k in registry.control_kinds()]
    assert kinds == ["ControlNetModel", "T2IAdapter", "SD3ControlNetModel", "FluxControlNetModel"]

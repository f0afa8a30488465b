"""LoRAs per region, embeddings and prompt weighting through the pipeline (the adapters have their own tests)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch

from multidiffusion.adapters.customise.embeddings import EmbeddingSpec
from multidiffusion.adapters.customise.lora import LoraSpec
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.regions import Region
from multidiffusion.core.features.tags import BySet
from multidiffusion.pipeline import MultiDiffusionPipeline
from multidiffusion.pipeline.customise.customisation import Customisation
from tests.helpers.tiny_lora import save_embedding, save_lora
from tests.helpers.tiny_models import loaded

KW = dict(height=128, width=384, num_inference_steps=2, output_type="latent", progress=False, bootstrap_fraction=0.0)


@pytest.fixture(scope="module")
def pipe(small: dict[str, Any]) -> MultiDiffusionPipeline:
    """A pipeline of its own: LoRAs load into and unload from its model."""
    return MultiDiffusionPipeline(loaded(small))


@pytest.fixture(scope="module")
def lora(small: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> str:
    from diffusers import StableDiffusionPipeline

    path = tmp_path_factory.mktemp("lora") / "style.safetensors"
    return str(save_lora(StableDiffusionPipeline, small, path, seed=4))


def _regions(pipe: MultiDiffusionPipeline, regions: list[Region], **kwargs: Any) -> torch.Tensor:
    return pipe.regions(regions, generator=torch.Generator().manual_seed(5), **{**KW, **kwargs}).latents


def test_region_without_lora_is_bit_identical_to_a_run_without_any(pipe, lora):
    """Left region with a LoRA, right region without; no background. The right region's cells beyond the reach of
    views that hold left-region tasks equal, bit for bit, the run with no LoRA anywhere."""
    left, right = (0, 0, 192, 128), (192, 0, 384, 128)
    with_lora = [Region("a red barn", box=left, loras=(LoraSpec(lora, 0.8),)), Region("a blue lake", box=right)]
    plain = [Region("a red barn", box=left), Region("a blue lake", box=right)]
    a, b = _regions(pipe, with_lora), _regions(pipe, plain)
    diff = (a - b).abs()[0].sum(dim=0)
    # Left region: cells 0–23. Views (16 cells, stride 8) that hold them start at column ≤ 23 and end by column 39;
    # two steps can carry a change one view further (the canvas mixes where views overlap): columns 40–47 stay.
    assert diff[:, :24].min() > 0
    assert diff[:, 40:].max() == 0
    # and the model is as loaded afterwards: a plain run again is bit-identical
    assert torch.equal(_regions(pipe, plain), b)


def test_views_are_batched_by_lora_set(pipe, lora, monkeypatch):
    """Two regions with different LoRA sets and a background without: adapters switch once per set per step, not
    once per batch row (tasks ordered by set; the set already active is served first)."""
    switched: list[Any] = []
    original = BySet._activate

    def spy(self: BySet, key: Any) -> None:
        if key != self.active:
            switched.append(key)
        original(self, key)

    monkeypatch.setattr(BySet, "_activate", spy)
    regions = [
        Region("a barn", box=(0, 0, 128, 128), loras=(LoraSpec(lora, 0.5),)),
        Region("a lake", box=(256, 0, 384, 128), loras=(LoraSpec(lora, 1.0),)),
    ]
    pipe.regions(regions, background="a meadow", generator=torch.Generator().manual_seed(1), view_batch_size=4, **KW)
    assert 0 < len(switched) <= 3 * KW["num_inference_steps"] + 1


def test_a_lora_for_every_view_changes_the_image_and_is_unloaded_after(pipe, lora):
    kwargs = dict(height=128, width=256, num_inference_steps=2, output_type="latent", progress=False)
    plain = pipe("a hill", generator=torch.Generator().manual_seed(2), **kwargs).latents
    styled = pipe(
        "a hill",
        generator=torch.Generator().manual_seed(2),
        customise=Customisation(loras=(LoraSpec(lora, 0.9),)),
        **kwargs,
    )
    assert not torch.equal(styled.latents, plain)
    assert styled.metadata.settings.customisation == {
        "loras": ["style.safetensors:0.9"],
        "sha256": {"lora": {"style.safetensors": hashlib.sha256(Path(lora).read_bytes()).hexdigest()}},
    }
    assert torch.equal(pipe("a hill", generator=torch.Generator().manual_seed(2), **kwargs).latents, plain)


def test_prompt_weight_one_equals_the_plain_prompt_through_the_pipeline(pipe):
    kwargs = dict(height=128, width=256, num_inference_steps=2, output_type="latent", progress=False)
    plain = pipe("a castle on a hill", generator=torch.Generator().manual_seed(2), **kwargs).latents
    same = pipe("a (castle:1.0) on a hill", generator=torch.Generator().manual_seed(2), **kwargs).latents
    heavier = pipe("a (castle:1.5) on a hill", generator=torch.Generator().manual_seed(2), **kwargs).latents
    assert torch.equal(same, plain)
    assert not torch.equal(heavier, plain)


def test_no_prompt_weighting_reads_the_syntax_literally_and_says_so(pipe):
    kwargs = dict(height=128, width=256, num_inference_steps=1, output_type="latent", progress=False)
    with pytest.warns(UserWarning, match="prompt weighting is off"):
        literal = pipe(
            "a (castle:1.0)",
            generator=torch.Generator().manual_seed(2),
            customise=Customisation(prompt_weighting=False),
            **kwargs,
        )
    weighted = pipe("a (castle:1.0)", generator=torch.Generator().manual_seed(2), **kwargs)
    assert not torch.equal(literal.latents, weighted.latents)
    assert literal.metadata.settings.customisation == {"prompt_weighting": False}


def test_long_prompts_are_chunked_not_cut_with_weighting(pipe):
    long = " ".join(["castle"] * 120)
    kwargs = dict(height=128, width=256, num_inference_steps=1, output_type="latent", progress=False)
    with pytest.warns(UserWarning, match="cuts it"):
        cut = pipe(long, generator=torch.Generator().manual_seed(2),
                   customise=Customisation(prompt_weighting=False), **kwargs)  # fmt: skip
    chunked = pipe(long, generator=torch.Generator().manual_seed(2), **kwargs)
    assert not torch.equal(cut.latents, chunked.latents)


def test_embedding_through_the_api_loads_once_and_changes_only_prompts_with_its_token(tmp_path):
    """On components of its own: an embedding stays in the tokenizer and text encoder it was loaded into."""
    from tests.helpers.tiny_models import make_components

    pipe = MultiDiffusionPipeline(loaded(make_components(tmp_path / "own", sample_size=16, seed=1)))
    dim = pipe.model.components["text_encoder"].config.hidden_size
    path = save_embedding(tmp_path / "shiny-style.safetensors", 2, dim, seed=3)
    custom = Customisation(embeddings=(EmbeddingSpec(str(path)),))
    kwargs = dict(height=128, width=256, num_inference_steps=1, output_type="latent", progress=False)
    plain = pipe("a hill", generator=torch.Generator().manual_seed(2), **kwargs).latents
    same = pipe("a hill", generator=torch.Generator().manual_seed(2), customise=custom, **kwargs).latents
    styled = pipe("a hill, shiny-style", generator=torch.Generator().manual_seed(2), customise=custom, **kwargs)
    assert torch.equal(same, plain)
    assert styled.metadata.settings.customisation == {
        "embeddings": ["shiny-style.safetensors:shiny-style"],
        "sha256": {"embedding": {"shiny-style.safetensors": hashlib.sha256(path.read_bytes()).hexdigest()}},
    }
    again = pipe("a hill, shiny-style", generator=torch.Generator().manual_seed(2), customise=custom, **kwargs)
    assert torch.equal(again.latents, styled.latents)  # the second run reuses the loaded token


def test_bad_customisation_is_one_line_before_loading(pipe, tmp_path):
    (tmp_path / "x.ckpt").write_bytes(b"0")
    cases = [
        (Customisation(loras=(LoraSpec(str(tmp_path / "missing.safetensors")),)), "does not exist"),
        (Customisation(loras=(LoraSpec(str(tmp_path / "x.ckpt")),)), "--allow-pickle"),
        (Customisation(embeddings=(EmbeddingSpec(str(tmp_path / "none.safetensors")),)), "does not exist"),
        (Customisation(loras=("style.safetensors",)), "expected a LoraSpec"),  # type: ignore[arg-type]
    ]
    for custom, message in cases:
        with pytest.raises(InvalidInputError, match=message) as info:
            pipe("a hill", height=128, width=256, num_inference_steps=1, progress=False, customise=custom)
        assert "\n" not in str(info.value)


def test_sync_with_a_region_lora_is_refused(pipe, lora):
    regions = [Region("a barn", box=(0, 0, 128, 128), loras=(LoraSpec(lora),))]
    with pytest.raises(InvalidInputError, match="sync cannot be combined"):
        pipe.regions(regions, background="a meadow", sync=True, **KW)


def test_a_region_lora_runs_on_a_family_without_control(tmp_path):
    """SD 3 takes LoRAs but no ControlNet: a region's own LoRA set still batches by set (no control wrapper)."""
    from tests.helpers.tiny_lora import family_model_with_lora

    model, file = family_model_with_lora("sd3", tmp_path)
    pipe = MultiDiffusionPipeline(model)
    kwargs = dict(height=128, width=256, num_inference_steps=1, output_type="latent", progress=False)
    regions = [Region("a barn", box=(0, 0, 128, 128), loras=(LoraSpec(str(file), 0.8),))]
    styled = pipe.regions(regions, background="a meadow", generator=torch.Generator().manual_seed(1), **kwargs)
    plain = pipe.regions([Region("a barn", box=(0, 0, 128, 128))], background="a meadow",
                         generator=torch.Generator().manual_seed(1), **kwargs)  # fmt: skip
    assert not torch.equal(styled.latents, plain.latents)
    assert styled.metadata.settings.customisation == {
        "region_loras": [[], ["sd3.safetensors:0.8"]],
        "sha256": {"lora": {"sd3.safetensors": hashlib.sha256(Path(file).read_bytes()).hexdigest()}},
    }

"""The pipeline on tiny SD components (native window 16 latent cells = 128 px)."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch

from multidiffusion.adapters.codecs.vae import VaeCodec
from multidiffusion.adapters.schedulers.names import DIFFUSION_NAMES
from multidiffusion.core import InvalidInputError
from multidiffusion.pipeline import MultiDiffusionPipeline
from multidiffusion.pipeline.run.generate import auto_view_batch_size
from tests.helpers.numerics import assert_close_scaled
from tests.helpers.spies import counted_rows
from tests.helpers.tiny_models import loaded

# The same decoded floats reaching the caller two ways (images in [0, 1]): measured 0; 8 ulps at 1 allowed.
REL_DECODE = 1e-6
# Relative to max|expected| (tests/helpers/numerics.py). The UNet's float32 sums depend a little on the batch size: 3
# steps of the tiny UNet with CFG, latents |x| ≈ 13; worst measured 6.9e-7 (AVX2 kernels), 5.6e-7 (AVX-512).
REL_UNET = 1e-5

PROMPT = "a red sky over the sea"


def run(pipe, seed=0, **kwargs):
    args = dict(height=256, width=640, num_inference_steps=3, output_type="latent", progress=False)
    args.update(kwargs)
    return pipe(PROMPT, generator=torch.Generator().manual_seed(seed), **args)


@pytest.mark.heavy
@pytest.mark.float_sensitive
def test_view_batch_size_does_not_change_result(small_pipe):
    """3 rows × 9 columns of views; batches of 1, 5 and all views agree to float rounding.

    The UNet's float32 sums depend a little on the batch size: allow 1e-5 relative to the latents' scale.
    """
    ref = run(small_pipe, view_batch_size=None).latents
    for size in (1, 5):
        assert_close_scaled(
            run(small_pipe, view_batch_size=size).latents, ref, rel=REL_UNET, what=f"view_batch_size={size} vs all"
        )


@pytest.mark.heavy
def test_rerun_is_bit_identical(small_pipe):
    assert torch.equal(run(small_pipe, seed=4).latents, run(small_pipe, seed=4).latents)
    assert not torch.equal(run(small_pipe, seed=4).latents, run(small_pipe, seed=5).latents)


@pytest.mark.heavy
@pytest.mark.parametrize("scheduler", DIFFUSION_NAMES)
def test_every_scheduler_runs(small_pipe, scheduler):
    out = run(small_pipe, scheduler=scheduler, seed=1, width=384)
    assert out.latents.shape == (1, 4, 32, 48)
    assert bool(torch.isfinite(out.latents).all())
    assert out.steps_run >= out.metadata.settings.num_inference_steps  # Heun and PLMS take extra evaluations
    again = run(small_pipe, scheduler=scheduler, seed=1, width=384)
    assert torch.equal(out.latents, again.latents)  # stochastic schedulers draw from the generator


def test_callback_sees_every_step_and_can_stop(small_pipe):
    seen = []

    def callback(state):
        seen.append((state.step_index, state.num_steps, tuple(state.latents.shape)))
        return state.step_index == 1

    out = run(small_pipe, num_inference_steps=5, callback_on_step_end=callback)
    assert [s[0] for s in seen] == [0, 1]
    assert seen[0][1:] == (5, (1, 4, 32, 80))
    assert out.steps_run == 2


@pytest.mark.float_sensitive
def test_output_types(small_pipe):
    pil = run(small_pipe, output_type="pil", width=256, num_inference_steps=1).images
    assert len(pil) == 1 and pil[0].size == (256, 256) and pil[0].mode == "RGB"
    arr = run(small_pipe, output_type="np", width=256, num_inference_steps=1).images
    assert arr.shape == (1, 256, 256, 3) and arr.min() >= 0 and arr.max() <= 1
    pt = run(small_pipe, output_type="pt", width=256, num_inference_steps=1).images
    assert pt.shape == (1, 3, 256, 256)
    assert_close_scaled(pt.permute(0, 2, 3, 1).numpy(), arr, rel=REL_DECODE, what="pt vs np images")


def test_several_prompts_make_several_canvases(small_pipe):
    out = small_pipe(
        ["a", "b"],
        negative_prompt="c",
        height=128,
        width=256,
        num_inference_steps=2,
        output_type="latent",
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    assert out.latents.shape[0] == 2 and out.metadata.settings.negative_prompt == ("c", "c")


def test_metadata_records_the_seed_only_for_a_fresh_generator(small_pipe):
    assert run(small_pipe, seed=11).metadata.settings.seed == 11
    g = torch.Generator().manual_seed(11)
    torch.randn(3, generator=g)
    out = small_pipe(
        PROMPT, height=128, width=128, num_inference_steps=1, generator=g, output_type="latent", progress=False
    )
    assert out.metadata.settings.seed is None
    fresh = small_pipe(PROMPT, height=128, width=128, num_inference_steps=1, output_type="latent", progress=False)
    assert isinstance(fresh.metadata.settings.seed, int)  # a seed is drawn and recorded


def test_guidance_one_skips_the_negative_pass(small):
    model = loaded(small)
    pipe = MultiDiffusionPipeline(model)
    with counted_rows(model) as rows:
        pipe(
            PROMPT,
            height=128,
            width=256,
            num_inference_steps=1,
            guidance_scale=1.0,
            output_type="latent",
            progress=False,
            view_batch_size=100,
        )
        pipe(
            PROMPT,
            height=128,
            width=256,
            num_inference_steps=1,
            guidance_scale=7.5,
            output_type="latent",
            progress=False,
            view_batch_size=100,
        )
    assert rows == [9, 18]  # 9 views (default stride 128 / 8 = 16 px); guidance doubles the rows, in one batch


@pytest.mark.heavy
def test_weights_window_and_small_canvas(small_pipe):
    assert run(small_pipe).metadata.settings.views.weights == "gaussian"  # the default (docs/fusion.md)
    uniform = run(small_pipe, weights="uniform").latents
    for kind in ("feathered", "gaussian"):
        other = run(small_pipe, weights=kind).latents
        assert bool(torch.isfinite(other).all()) and not torch.equal(other, uniform)
    wide = run(small_pipe, window=192, stride=64).latents  # larger than native: allowed
    assert wide.shape == uniform.shape
    short = run(small_pipe, height=64, width=256).latents  # shorter than the window: one row of 8-cell views
    assert short.shape == (1, 4, 8, 32)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(height=0), "height must be a positive"),
        (dict(width=100), "multiple of 8"),
        (dict(window=100), "window must be a multiple of 8"),
        (dict(stride=0), "stride must be a positive"),
        (dict(stride=256), "must not exceed the window"),
        (dict(stride=12), "stride must be a multiple of 8"),
        (dict(scheduler="nope"), "unknown scheduler 'nope'; choose one of: ddim"),
        (dict(num_inference_steps=0), "steps must be an integer"),
        (dict(guidance_scale=-1.0), "guidance scale must be ≥ 0"),
        (dict(guidance_rescale=2.0), "guidance rescale"),
        (dict(weights="bumpy"), "unknown weights"),
        (dict(output_type="jpeg"), "unknown output type"),
        (dict(view_batch_size=0), "view batch size"),
    ],
)
def test_bad_input_raises_one_clear_line(small_pipe, kwargs, message):
    with pytest.raises(InvalidInputError, match=message) as info:
        run(small_pipe, **kwargs)
    assert "\n" not in str(info.value)


def test_empty_prompt_list_and_mismatched_negatives(small_pipe):
    with pytest.raises(InvalidInputError, match="prompt list is empty"):
        small_pipe([], height=128, width=128)
    with pytest.raises(InvalidInputError, match="2 negative prompts for 3 prompts"):
        small_pipe(["a", "b", "c"], negative_prompt=["x", "y"], height=128, width=128)


def test_auto_view_batch_size(small):
    model = loaded(small)
    assert 1 <= auto_view_batch_size(model, 256, 2, 40) <= 40
    model.bytes_per_view_cell = 1 << 50
    assert auto_view_batch_size(model, 256, 2, 40) == 1
    model.bytes_per_view_cell = 0
    assert auto_view_batch_size(model, 256, 2, 40) == 40


class _HalfOverflowVae(torch.nn.Module):
    """A stand-in VAE whose half-precision decode overflows, as SD's VAE can in fp16."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(block_out_channels=(1, 1, 1, 1), latent_channels=4, scaling_factor=0.5)
        self.anchor = torch.nn.Parameter(torch.zeros(1, dtype=torch.float16))
        self.calls = []

    @property
    def dtype(self):
        return self.anchor.dtype

    @property
    def device(self):
        return self.anchor.device

    def decode(self, z):
        self.calls.append(z.dtype)
        image = torch.zeros(z.shape[0], 3, z.shape[2] * 8, z.shape[3] * 8, dtype=z.dtype)
        if z.dtype == torch.float16:
            image[..., 0, 0] = float("nan")
        return SimpleNamespace(sample=image)


def test_half_precision_decode_overflow_is_redone_in_float32():
    vae = _HalfOverflowVae()
    codec = VaeCodec(vae)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = codec.decode(torch.zeros(1, 4, 2, 3))
    assert vae.calls == [torch.float16, torch.float32]
    assert bool(torch.isfinite(image).all()) and image.shape == (1, 3, 16, 24)
    assert vae.dtype == torch.float16  # restored after the float32 retry
    assert any("decoding again in float32" in str(w.message) for w in caught)


@pytest.mark.float_sensitive
def test_circular_panorama_is_decoded_with_wraparound_context(small_pipe):
    """A 360° canvas is decoded with columns from the opposite side, so the decoder sees no border there."""
    from multidiffusion.core.engine.decoding import decode_wrapped

    out = run(small_pipe, circular=True, width=256, height=128, output_type="pt")
    codec = small_pipe.model.codec
    plain = codec.decode(out.latents)
    wrapped = decode_wrapped(codec, out.latents)
    assert wrapped.shape == plain.shape == (1, 3, 128, 256)
    assert_close_scaled(
        out.images, (wrapped / 2 + 0.5).clamp(0, 1), rel=REL_DECODE, what="pipeline image vs decode_wrapped"
    )
    # Reference for the seam: decode with the seam moved to the middle of the canvas, then roll back.
    moved = torch.roll(codec.decode(torch.roll(out.latents, 16, dims=-1)), -128, dims=-1)

    def seam(image):
        return torch.cat([image[..., -16:], image[..., :16]], dim=-1)

    # Only the VAE's canvas-wide GroupNorm statistics differ (measured 0.03); a plain decode is off by ~1.
    assert (seam(wrapped) - seam(moved)).abs().max().item() < 0.1
    assert (seam(plain) - seam(moved)).abs().max().item() > 0.3


def test_default_weights_are_gaussian_and_uniform_with_sync():
    """weights=None resolves per run and is recorded resolved; a layout refuses explicit weights (docs/fusion.md)."""
    pipe = MultiDiffusionPipeline.from_pretrained("toy")
    args = dict(height=16, width=64, window=16, stride=8, num_inference_steps=2, output_type="latent", progress=False)
    assert pipe("sky", **args).metadata.settings.views.weights == "gaussian"
    synced = pipe("sky", sync=True, sync_loss="builtin", **args)
    assert synced.metadata.settings.views.weights == "uniform"
    assert pipe("sky", sync=True, sync_loss="builtin", weights="feathered", **args).metadata.settings.views.weights == (
        "feathered"
    )
    with pytest.raises(InvalidInputError, match="sets the stride and weights itself"):
        pipe("sky", height=16, width=64, layout="half-overlap", weights="uniform", num_inference_steps=1)

"""Out of memory part-way: the view batch (or the VAE tile) halves and the work is redone; the result is what that
batch size gives, and the generator is rewound so hooks draw the same numbers (injected errors on the CPU)."""

from __future__ import annotations

import pytest
import torch

from multidiffusion.core.features.regions import Region
from multidiffusion.pipeline import MultiDiffusionPipeline
from tests.helpers.numerics import assert_close_scaled


def _failing_above(denoiser, rows: int, seen: list[int]):
    """``denoiser`` that raises CUDA's out-of-memory error for batches of more than ``rows`` rows."""

    def limited(x, t, conds, views=None):
        seen.append(x.shape[0])
        if x.shape[0] > rows:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {x.shape[0]} rows")
        return denoiser(x, t, conds, views=views)

    return limited


def _regions(pipe, **kwargs):
    """A region run with bootstrapping (it draws colours from the generator in every early step)."""
    return _regions_output(pipe, **kwargs).latents


def _regions_output(pipe, **kwargs):
    return pipe.regions(
        [Region("red", box=(0, 0, 64, 64)), Region("blue", box=(64, 0, 128, 64))],
        background="sky",
        height=64,
        width=128,
        window=32,
        stride=16,
        num_inference_steps=6,
        bootstrap_fraction=0.5,
        generator=torch.Generator().manual_seed(3),
        output_type="latent",
        progress=False,
        **kwargs,
    )


def test_view_batch_halves_and_the_step_is_redone():
    pipe = MultiDiffusionPipeline.from_pretrained("toy")
    reference = _regions(pipe, view_batch_size=6)  # where the back-off lands: 24 → 12 → 6 views per call
    inner, seen = pipe.model.denoiser, []
    pipe.model.denoiser = _failing_above(inner, 8, seen)
    with pytest.warns(RuntimeWarning, match=r"out of memory with \d+ views per model call; redoing step 1 with"):
        output = _regions_output(pipe)
    backed_off = output.latents
    assert output.metadata.view_batch_size == 6  # the batch that reproduces it, not the one asked for (all)
    assert max(seen) > 8 and seen[-1] <= 8  # it tried the full batch first, then went down
    assert torch.equal(backed_off, reference)  # same batches, same generator draws (rewound for the redone step)


def test_one_view_that_does_not_fit_is_the_error_itself():
    pipe = MultiDiffusionPipeline.from_pretrained("toy")
    pipe.model.denoiser = _failing_above(pipe.model.denoiser, 0, [])
    with pytest.raises(torch.OutOfMemoryError), pytest.warns(RuntimeWarning):
        pipe("sky", height=32, width=64, window=32, stride=16, num_inference_steps=2, progress=False)


def test_other_errors_are_not_retried():
    pipe = MultiDiffusionPipeline.from_pretrained("toy")

    def broken(x, t, conds, views=None):
        raise RuntimeError("shape mismatch")

    pipe.model.denoiser = broken
    with pytest.raises(RuntimeError, match="shape mismatch"):
        pipe("sky", height=32, width=64, window=32, stride=16, num_inference_steps=2, progress=False)


@pytest.mark.float_sensitive
def test_vae_decode_tiles_after_out_of_memory(small, monkeypatch):
    """A whole decode that runs out of memory is redone in tiles, and tiles that do are halved."""
    from multidiffusion.adapters.codecs import vae as vae_module
    from multidiffusion.adapters.codecs.vae import VaeCodec

    codec = VaeCodec(small["vae"], tiled=False)
    latents = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = codec.decode(latents)

    codec = VaeCodec(small["vae"], tile_px=256)
    whole = small["vae"].decode
    tiled = vae_module.tiled_decode
    tiles: list[int] = []

    def whole_fails(z, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    def big_tiles_fail(vae, z, tile_cells, park_device):
        tiles.append(tile_cells)
        if tile_cells > 8:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return tiled(vae, z, tile_cells, park_device)

    monkeypatch.setattr(small["vae"], "decode", whole_fails)
    monkeypatch.setattr(vae_module, "tiled_decode", big_tiles_fail)
    with pytest.warns(RuntimeWarning, match="out of memory in the VAE decode; retrying it in tiles of"):
        image = codec.decode(latents)
    monkeypatch.setattr(small["vae"], "decode", whole)
    assert tiles == [32, 16, 8]  # 256 px, 128 px, 64 px tiles
    # Tiled and whole decodes agree to float rounding (tests/adapters/codecs/test_tiled_vae.py: 6.5e-6 worst measured).
    assert_close_scaled(image, expected, rel=1e-4, what="decode after out-of-memory back-off")

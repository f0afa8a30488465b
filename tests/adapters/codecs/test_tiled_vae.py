"""Tiled VAE decode/encode (adapters.codecs.tiled_vae) equals the full decode/encode, through VaeCodec too."""

from __future__ import annotations

import copy
import importlib.util
import warnings

import pytest
import torch

from multidiffusion.adapters.codecs import vae as vae_module
from multidiffusion.adapters.codecs.tiled_vae import (
    TilingUnsupportedError,
    tiled_decode,
    tiled_encode,
    tiling_unsupported_reason,
)
from multidiffusion.adapters.codecs.vae import VaeCodec
from multidiffusion.core.errors import InvalidInputError
from tests.helpers import REPO_ROOT
from tests.helpers.numerics import assert_close_scaled

# GroupNorm statistics accumulated tile by tile vs over the whole canvas (float32 sums of ~10³ values), relative to
# the group's variance (std for the mean): measured up to 2.8e-6 on AVX2 and AVX-512 kernels.
REL_STATS = 5e-5
# Relative to max|full| (tests/helpers/numerics.py): tiled vs full decode / encode through the whole VAE (tiles'
# GroupNorm
# statistics merged, convolutions on other shapes): measured up to 6.5e-6 on AVX2 and AVX-512 kernels. Outputs are
# |x| ≲ 2.5, so this is also within the absolute bound of 1e-3.
REL_TILED = 1e-4

pytestmark = pytest.mark.usefixtures("one_thread")


def _random_affine(vae: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A copy whose GroupNorms have random scales and shifts (fresh ones are 1 and 0: affine untested)."""
    vae = copy.deepcopy(vae).eval()
    g = torch.Generator().manual_seed(seed)
    for m in vae.modules():
        if isinstance(m, torch.nn.GroupNorm):
            m.weight.data = torch.rand(m.weight.shape, generator=g) + 0.5
            m.bias.data = torch.rand(m.bias.shape, generator=g) - 0.5
    return vae


def _make_vae(seed: int = 3, **config) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    n = len(config["block_out_channels"])
    config = {
        "down_block_types": ("DownEncoderBlock2D",) * n,
        "up_block_types": ("UpDecoderBlock2D",) * n,
        "latent_channels": 4,
        "norm_num_groups": 4,
    } | config
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)  # test helper only: reproducible random weights
        return AutoencoderKL(**config).eval()
    finally:
        torch.random.set_rng_state(state)


@pytest.fixture(scope="module")
def vaes(small) -> dict[str, torch.nn.Module]:
    """The suite's tiny VAE (f = 8), and one (f = 4) with channel-changing resnets (1×1 shortcuts), two
    layers per block and no quant convs; both with random GroupNorm affines."""
    other = _make_vae(
        block_out_channels=(8, 8, 16), layers_per_block=2, use_quant_conv=False, use_post_quant_conv=False
    )
    shortcuts = [m.conv_shortcut for m in other.modules() if hasattr(m, "conv_shortcut") and hasattr(m, "norm1")]
    assert other.quant_conv is None and other.post_quant_conv is None and sum(c is not None for c in shortcuts) == 2
    return {"tiny": _random_affine(small["vae"], 0), "shortcut": _random_affine(other, 1)}


def _f(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


# (VAE, latent height, latent width, tile in latent cells): sizes that are and are not multiples of the
# tile, a canvas smaller than one tile, one-cell-wide tiles.
CASES = [
    ("tiny", 16, 24, 8),
    ("tiny", 13, 21, 5),
    ("tiny", 13, 21, 2),
    ("tiny", 9, 30, 4),
    ("tiny", 5, 7, 64),
    ("tiny", 3, 11, 1),
    ("shortcut", 15, 22, 6),
    ("shortcut", 12, 16, 3),
]


@pytest.mark.float_sensitive
@pytest.mark.parametrize(("name", "h", "w", "tile"), CASES)
def test_tiled_decode_equals_full_decode(vaes, name, h, w, tile):
    vae = vaes[name]
    z = torch.randn(2, 4, h, w, generator=torch.Generator().manual_seed(h * w))
    with torch.no_grad():
        full = vae.decode(z).sample
    tiled = tiled_decode(vae, z, tile)
    f = _f(vae)
    assert tiled.shape == full.shape == (2, 3, h * f, w * f)
    assert_close_scaled(tiled, full, rel=REL_TILED, what=f"tiled decode {name} {h}x{w}, tile {tile}")


@pytest.mark.float_sensitive
@pytest.mark.parametrize(("name", "h", "w", "tile"), CASES)
def test_tiled_encode_equals_full_encode(vaes, name, h, w, tile):
    vae = vaes[name]
    f = _f(vae)
    images = torch.rand(2, 3, h * f, w * f, generator=torch.Generator().manual_seed(h + w)) * 2 - 1
    with torch.no_grad():
        full = vae.encode(images).latent_dist.parameters
    tiled = tiled_encode(vae, images, tile)
    assert tiled.shape == full.shape == (2, 8, h, w)
    assert_close_scaled(tiled, full, rel=REL_TILED, what=f"tiled encode {name} {h}x{w}, tile {tile}")


def _full_canvas_statistics(vae, part, run) -> list[tuple[torch.nn.Module, torch.Tensor, torch.Tensor]]:
    """(norm, mean, var) of the input of every GroupNorm in ``part`` during ``run()``, in call order."""
    seen = []

    def hook(module, args):
        x = args[0]
        var, mean = torch.var_mean(x.double().reshape(x.shape[0], module.num_groups, -1), dim=-1, correction=0)
        seen.append((module, mean, var))

    handles = [m.register_forward_pre_hook(hook) for m in part.modules() if isinstance(m, torch.nn.GroupNorm)]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return seen


@pytest.mark.float_sensitive
@pytest.mark.parametrize("direction", ["decode", "encode"])
def test_statistics_are_the_whole_canvas_group_norm_statistics(vaes, direction):
    vae = vaes["shortcut"]
    z = torch.randn(2, 4, 11, 17, generator=torch.Generator().manual_seed(0))
    images = torch.rand(2, 3, 44, 68, generator=torch.Generator().manual_seed(0)) * 2 - 1
    got = []

    def record(norm, mean, var):
        got.append((norm, mean, var))

    if direction == "decode":
        tiled_decode(vae, z, 4, on_stats=record)
        want = _full_canvas_statistics(vae, vae.decoder.up_blocks, lambda: vae.decode(z))
        want += _full_canvas_statistics(vae, vae.decoder.conv_norm_out, lambda: vae.decode(z))
    else:
        tiled_encode(vae, images, 4, on_stats=record)
        want = _full_canvas_statistics(vae, vae.encoder.down_blocks, lambda: vae.encode(images))
    assert len(got) == len(want) > 0
    for (norm, mean, var), (norm_full, mean_full, var_full) in zip(got, want, strict=True):
        assert norm is norm_full and mean.shape == var.shape == (2, norm.num_groups)
        assert_close_scaled(mean, mean_full, rel=REL_STATS, what="GroupNorm mean", scale=float(var_full.max().sqrt()))
        assert_close_scaled(var, var_full, rel=REL_STATS, what="GroupNorm variance")


@pytest.mark.float_sensitive
def test_tiles_with_their_own_statistics_would_not_match(vaes):
    """Negative control: decoding tiles separately (halo 4 cells, cores cropped) is visibly off, so the
    REL_TILED comparisons above can see the seams that per-tile GroupNorm statistics make."""
    vae, (h, w), tile, halo = vaes["tiny"], (12, 18), 6, 4
    z = torch.randn(1, 4, h, w, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = vae.decode(z).sample
        naive = torch.empty_like(full)
        for y in range(0, h, tile):
            for x in range(0, w, tile):
                y0, x0 = max(0, y - halo), max(0, x - halo)
                out = vae.decode(z[..., y0 : y + tile + halo, x0 : x + tile + halo]).sample
                naive[..., y * 8 : (y + tile) * 8, x * 8 : (x + tile) * 8] = out[
                    ..., (y - y0) * 8 : (y - y0 + tile) * 8, (x - x0) * 8 : (x - x0 + tile) * 8
                ]
    assert float((naive - full).abs().max()) > 100 * REL_TILED * float(full.abs().max())
    assert_close_scaled(tiled_decode(vae, z, tile), full, rel=REL_TILED, what="tiled decode")


@pytest.mark.float_sensitive
def test_half_precision_tiled_decode_is_as_close_to_float32_as_the_full_one(vaes):
    vae = vaes["tiny"]
    z = torch.randn(1, 4, 13, 21, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = vae.decode(z).sample
    half = copy.deepcopy(vae).half()
    with torch.no_grad():
        full = half.decode(z.half()).sample.float()
    tiled = tiled_decode(half, z.half(), 5)
    assert tiled.dtype == torch.float16
    assert float((tiled.float() - reference).abs().max()) <= 2 * float((full - reference).abs().max())


# ---------------------------------------------------------------- VaeCodec


class _Spy:
    """Counts calls of a tiled function in the codec's module and passes them through."""

    def __init__(self, monkeypatch, name: str) -> None:
        self.calls = 0
        self.inner = getattr(vae_module, name)
        monkeypatch.setattr(vae_module, name, self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)


@pytest.mark.float_sensitive
def test_codec_tiles_automatically_above_the_threshold(vaes, monkeypatch):
    decode_spy, encode_spy = _Spy(monkeypatch, "tiled_decode"), _Spy(monkeypatch, "tiled_encode")
    vae = vaes["tiny"]
    z = torch.randn(2, 4, 10, 12, generator=torch.Generator().manual_seed(3))
    pixels = 2 * 80 * 96  # batch × height × width
    at = VaeCodec(vae, tile_px=32, tiled_above_px=pixels)
    above = VaeCodec(vae, tile_px=32, tiled_above_px=pixels - 1)
    assert at.tiled is None and not at.uses_tiling(2, 80, 96) and above.uses_tiling(2, 80, 96)
    whole = at.decode(z)
    assert decode_spy.calls == 0
    tiled = above.decode(z)
    assert decode_spy.calls == 1
    assert_close_scaled(tiled, whole, rel=REL_TILED, what="codec tiled decode")
    images = (whole / 4).clamp(-1, 1)
    latents_whole = at.encode(images)
    assert encode_spy.calls == 0
    latents_tiled = above.encode(images)
    assert encode_spy.calls == 1
    assert_close_scaled(latents_tiled, latents_whole, rel=REL_TILED, what="codec tiled encode")
    assert VaeCodec(vae).tiled_above_px == 2**21 and VaeCodec(vae).tile_px == 512  # the documented defaults


@pytest.mark.float_sensitive
def test_codec_forcing_overrides_the_threshold(vaes, monkeypatch):
    spy = _Spy(monkeypatch, "tiled_decode")
    vae = vaes["tiny"]
    z = torch.randn(1, 4, 6, 5, generator=torch.Generator().manual_seed(4))
    forced = VaeCodec(vae, tiled=True, tile_px=16)  # far below the automatic threshold
    assert forced.uses_tiling(1, 48, 40)
    tiled = forced.decode(z)
    assert spy.calls == 1
    never = VaeCodec(vae, tiled=False, tiled_above_px=0)  # above it
    assert not never.uses_tiling(1, 48, 40)
    whole = never.decode(z)
    assert spy.calls == 1
    assert tiled.shape == whole.shape == (1, 3, 48, 40)
    assert_close_scaled(tiled, whole, rel=REL_TILED, what="forced tiled decode")
    never.tiled = True  # an attribute: the command line's --tiled-vae/--no-tiled-vae can set it
    never.decode(z)
    assert spy.calls == 2


def test_codec_tiled_half_precision_overflow_is_redone_in_float32(vaes, monkeypatch):
    spy = _Spy(monkeypatch, "tiled_decode")
    vae = copy.deepcopy(vaes["tiny"])
    vae.decoder.conv_out.weight.data *= 1e5  # |output| ~ 1e5: inf in float16
    reference = vae.decoder.conv_out.weight.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # diffusers' note on casting with .to()
        vae.half()
    codec = VaeCodec(vae, tiled=True, tile_px=24)
    with pytest.warns(RuntimeWarning, match="decoding again in float32"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="There are modules")
        image = codec.decode(torch.randn(1, 4, 4, 6, generator=torch.Generator().manual_seed(5)))
    assert spy.calls == 2  # the float32 retry is tiled too
    assert bool(torch.isfinite(image).all()) and float(image.abs().max()) > 1e3
    assert vae.dtype == torch.float16 and torch.equal(vae.decoder.conv_out.weight.float(), reference.half().float())


@pytest.mark.parametrize("tile_px", [0, -8, 4, 12, 100, 8.0, True, "64"])
def test_bad_tile_sizes_raise_one_clear_line(vaes, tile_px):
    with pytest.raises(InvalidInputError, match=r"^tile size must be a positive multiple of 8 px") as e:
        VaeCodec(vaes["tiny"], tile_px=tile_px)
    assert "\n" not in str(e.value)
    codec = VaeCodec(vaes["tiny"])
    with pytest.raises(InvalidInputError, match="positive multiple of 8 px"):
        codec.tile_px = tile_px
    assert codec.tile_px == 512


@pytest.mark.parametrize("tile", [0, -1, 2.5, None])
def test_bad_tile_cells_raise(vaes, tile):
    with pytest.raises(InvalidInputError, match="tile must be a positive whole number of latent cells"):
        tiled_decode(vaes["tiny"], torch.zeros(1, 4, 2, 2), tile)
    with pytest.raises(InvalidInputError, match="tile must be a positive whole number of latent cells"):
        tiled_encode(vaes["tiny"], torch.zeros(1, 3, 16, 16), tile)


def test_bad_codec_options_raise(vaes):
    with pytest.raises(InvalidInputError, match="tiled must be True, False or None"):
        VaeCodec(vaes["tiny"], tiled="yes")
    with pytest.raises(InvalidInputError, match="tiled_above_px must be a whole number of pixels"):
        VaeCodec(vaes["tiny"], tiled_above_px=-1)


def test_tiled_encode_needs_whole_latent_cells(vaes):
    images = torch.zeros(1, 3, 44, 40)  # 44 is not a multiple of 8
    with pytest.raises(InvalidInputError, match="multiples of 8 px, got 44×40"):
        tiled_encode(vaes["tiny"], images, 2)
    with pytest.raises(InvalidInputError, match="multiples of 8 px"):
        VaeCodec(vaes["tiny"], tiled=True).encode(images)
    automatic = VaeCodec(vaes["tiny"], tiled_above_px=0)  # above the threshold, but encoded whole
    with torch.no_grad():
        whole = vaes["tiny"].encode(images).latent_dist.mean * automatic.scaling_factor
    assert torch.equal(automatic.encode(images), whole)  # as before tiling existed


@pytest.mark.float_sensitive
def test_unsupported_architecture_is_refused_when_forced_and_decoded_whole_when_automatic():
    vae = _make_vae(block_out_channels=(8, 8), up_block_types=("AttnUpDecoderBlock2D",) * 2, layers_per_block=1)
    reason = tiling_unsupported_reason(vae)
    assert reason == "tiled VAE does not support decoder.up_blocks[0] (AttnUpDecoderBlock2D)"
    with pytest.raises(TilingUnsupportedError, match="AttnUpDecoderBlock2D"):
        VaeCodec(vae, tiled=True)
    with pytest.raises(TilingUnsupportedError, match="AttnUpDecoderBlock2D"):
        tiled_decode(vae, torch.zeros(1, 4, 3, 3), 2)
    codec = VaeCodec(vae, tiled_above_px=0)
    assert not codec.uses_tiling(1, 24, 24)
    z = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        expected = vae.decode(z / codec.scaling_factor).sample
    assert_close_scaled(codec.decode(z), expected, rel=REL_TILED, what="codec decode vs vae.decode")


# ---------------------------------------------------------------- memory: the tile, not the canvas


def _bench():
    path = REPO_ROOT / "bench" / "tiled_vae_memory.py"
    spec = importlib.util.spec_from_file_location("tiled_vae_memory", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.float_sensitive  # oneDNN's convolution workspace differs between AVX2 and AVX-512 kernels
def test_one_tile_working_set_does_not_grow_with_the_canvas(vaes):
    """Peak live bytes (torch.profiler): a full decode grows with the canvas, one tile's working set does
    not (it is what the compute device holds when the canvases are parked on the host)."""
    bench, vae = _bench(), vaes["tiny"]
    peaks = {}
    for h, w in [(12, 12), (12, 36)]:  # 3×3 and 3×9 tiles (both with interior tiles): 3× the area
        z = torch.randn(1, 4, h, w, generator=torch.Generator().manual_seed(7))

        def full(z=z):
            with torch.no_grad():
                return vae.decode(z).sample

        peaks[h * w] = (bench.profiled_peaks(full)[0], bench.profiled_peaks(lambda z=z: tiled_decode(vae, z, 4)))
    (full_small, (_, tile_small)), (full_large, (_, tile_large)) = peaks[144], peaks[432]
    print(f"full {full_small} → {full_large} B; one tile {tile_small} → {tile_large} B")
    assert full_large > 2.5 * full_small
    assert tile_large <= 1.05 * tile_small
    # the full decode at 3× the area holds 8.7× one tile's bytes with oneDNN's AVX-512 kernels, 7.2× with its
    # AVX2 kernels (smaller convolution workspaces): the point is a fraction of it, whatever the CPU
    assert tile_large < full_large / 4

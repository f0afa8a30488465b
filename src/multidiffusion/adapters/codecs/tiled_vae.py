"""Tiled VAE decode and encode that leave no seams, for diffusers ``AutoencoderKL``.

A VAE decoder is local except in two places: its GroupNorms normalise over the whole canvas, and the
mid block attends over the whole latent. Decoding tiles independently changes both (visible seams and
per-tile tone shifts). Here neither changes:

* The global parts run on the whole canvas at latent resolution, where they are cheap: decode runs
  ``post_quant_conv``, ``conv_in`` and the mid block (with its attention) on the whole latent; encode
  runs the mid block, the output norm/conv and ``quant_conv`` on the whole latent.
* The high-resolution parts (decode: the up blocks and the output norm/conv; encode: ``conv_in`` and the
  down blocks) are cut at every GroupNorm into *segments* (a segment is the local ops between two
  GroupNorms). All tiles run one segment, then the next: a lockstep. While tiles run a segment, the
  per-group statistics of its output are merged over the tile *cores*; every tile of the next segment is
  normalised with those whole-canvas statistics (GroupNorm's eps and affine included).
* Between segments the canvas is stored whole on ``park_device`` (the host when computing on a GPU), and
  each tile reads its core plus a *halo* from it: halo exchange, as in domain decomposition. The halo
  covers one segment's receptive field (1–4 pixels at the segment's resolution), so each tile's core is
  exactly what the full decode computes there; cores are cropped, nothing is blended.

So tiled ≡ full up to float rounding, for any tile size (a tile may be as small as one latent cell). The
compute device holds one tile's working set at a time, plus the latent-resolution global part; the parked
canvases grow with the canvas. Statistics are merged with Chan's parallel update (per-tile mean and sum of
squared deviations, float32 per tile, float64 across tiles) rather than Σx and Σx², whose difference
cancels catastrophically when a group's mean is large against its spread.

Wrap-around context (a 360° panorama, a texture that tiles on x, y or both) is not handled here:
``core.engine.decoding.decode_wrapped`` pads the latents periodically on every wrapped axis and decodes the padded
canvas, tiled or whole, so the tiled path wraps exactly as the full decode does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import Tensor, nn

from multidiffusion.core.errors import InvalidInputError

StatsCallback = Callable[[nn.GroupNorm, Tensor, Tensor], None]
"""Called with (norm, mean, var) for every synchronised GroupNorm; mean and var are (N, groups) float32."""

TILE_RANGE = "tiled_vae.tile"
"""``torch.profiler.record_function`` label around each tile's work (read, compute, write back)."""

Tensors = dict[str, Tensor]


class TilingUnsupportedError(InvalidInputError):
    """The VAE has a part the tiled path does not know (attention in an up block, a spatial norm, …)."""


@dataclass(frozen=True)
class Segment:
    """The local ops between two GroupNorms, run tile by tile.

    Attributes:
        reads: Canvas names the tiles read (``x``: the main stream, ``h``: a resnet's branch).
        run: Tile tensors → output tile tensors; outputs replace the canvases of the same name.
        halo: Context each side, pixels at the segment's input resolution.
        scale: Output pixels per input pixel (2: upsampling, 1/2: downsampling).
        norm: The GroupNorm applied first, with whole-canvas statistics, or None.
        norm_from: The canvas it normalises; the result goes to ``norm_to`` in the tile's tensors.
        norm_to: See ``norm_from``.
        drops: Canvases no longer needed after this segment.
    """

    reads: tuple[str, ...]
    run: Callable[[Tensors], Tensors]
    halo: int
    scale: Fraction = Fraction(1)
    norm: nn.GroupNorm | None = None
    norm_from: str = "x"
    norm_to: str = "x"
    drops: tuple[str, ...] = ()


# ---------------------------------------------------------------- the programs (what the VAE computes)


def _conv_radius(conv: nn.Module, what: str) -> int:
    """Pixels of context each side that a stride-1, zero-padded, 'same' convolution reads."""
    if not isinstance(conv, nn.Conv2d) or conv.stride != (1, 1) or conv.padding_mode != "zeros":
        raise TilingUnsupportedError(f"tiled VAE needs {what} to be a stride-1 zero-padded Conv2d")
    radius = tuple(d * (k - 1) // 2 for k, d in zip(conv.kernel_size, conv.dilation, strict=True))
    if any(k % 2 == 0 for k in conv.kernel_size) or tuple(conv.padding) != radius:
        raise TilingUnsupportedError(f"tiled VAE needs {what} to be an odd 'same' convolution")
    return max(radius)


def _group_norm(norm: nn.Module, what: str) -> nn.GroupNorm:
    if not isinstance(norm, nn.GroupNorm):
        raise TilingUnsupportedError(f"tiled VAE needs {what} to be a GroupNorm, not {type(norm).__name__}")
    return norm


def _even(n: int) -> int:
    return n + n % 2


def _resample(block: nn.Module, what: str) -> tuple[Callable[[Tensor], Tensor] | None, int, Fraction]:
    """A block's up/down sampler as (function, extra input halo, scale); (None, 0, 1) if it has none."""
    from diffusers.models.downsampling import Downsample2D
    from diffusers.models.upsampling import Upsample2D

    samplers = getattr(block, "upsamplers", None) or getattr(block, "downsamplers", None)
    if not samplers:
        return None, 0, Fraction(1)
    if len(samplers) != 1:
        raise TilingUnsupportedError(f"tiled VAE needs at most one resampler in {what}")
    s = samplers[0]
    if isinstance(s, Upsample2D) and s.interpolate and not s.use_conv_transpose and s.norm is None:
        conv = getattr(s, "conv", None) or s.Conv2d_0
        radius = _conv_radius(conv, f"{what}'s upsampler conv") if s.use_conv else 0
        # Nearest ×2, then the conv: an output pixel reads input pixels ⌈radius / 2⌉ away.
        return s, -(-radius // 2), Fraction(2)
    if isinstance(s, Downsample2D) and s.norm is None:
        if s.use_conv:
            c = s.conv
            if not isinstance(c, nn.Conv2d) or c.stride != (2, 2) or c.padding_mode != "zeros":
                raise TilingUnsupportedError(f"tiled VAE needs {what}'s downsampler to be a stride-2 Conv2d")
            # Output j reads inputs 2j − p … 2j − p + d(k − 1): that far beyond the core on either side.
            reach = max(d * (k - 1) for k, d in zip(c.kernel_size, c.dilation, strict=True))
            return s, reach, Fraction(1, 2)
        return s, 1, Fraction(1, 2)  # 2×2 average pool
    raise TilingUnsupportedError(f"tiled VAE does not know {what}'s resampler {type(s).__name__}")


def _resnet_segments(
    res: nn.Module, what: str, after: Callable[[Tensor], Tensor] | None, after_halo: int, scale: Fraction
) -> list[Segment]:
    """A ``ResnetBlock2D`` (no time embedding) as two segments; ``after`` (a resampler) joins the second.

    norm1 → act → conv1 | norm2 → act → dropout → conv2, + shortcut(x), / output_scale_factor [→ after]
    """
    from diffusers.models.resnet import ResnetBlock2D

    if not isinstance(res, ResnetBlock2D) or res.time_emb_proj is not None:
        raise TilingUnsupportedError(f"tiled VAE needs {what} to be a ResnetBlock2D without time embedding")
    if res.upsample is not None or res.downsample is not None:
        raise TilingUnsupportedError(f"tiled VAE does not support resampling inside {what}")
    norm1, norm2 = _group_norm(res.norm1, f"{what}.norm1"), _group_norm(res.norm2, f"{what}.norm2")
    r1, r2 = _conv_radius(res.conv1, f"{what}.conv1"), _conv_radius(res.conv2, f"{what}.conv2")
    if res.conv_shortcut is not None:
        r2 = max(r2, _conv_radius(res.conv_shortcut, f"{what}.conv_shortcut"))

    def first(t: Tensors) -> Tensors:
        return {"h": res.conv1(res.nonlinearity(t["h"]))}

    def second(t: Tensors) -> Tensors:
        h = res.conv2(res.dropout(res.nonlinearity(t["h"])))
        x = t["x"] if res.conv_shortcut is None else res.conv_shortcut(t["x"])
        out = (x + h) / res.output_scale_factor
        return {"x": out if after is None else after(out)}

    halo = r2 + after_halo
    if scale < 1:
        halo = _even(halo)  # windows must start on the stride-2 grid
    return [
        Segment(reads=("x",), run=first, halo=r1, norm=norm1, norm_from="x", norm_to="h"),
        Segment(
            reads=("h", "x"), run=second, halo=halo, scale=scale, norm=norm2, norm_from="h", norm_to="h", drops=("h",)
        ),
    ]


def _block_segments(blocks: nn.ModuleList, kind: str) -> list[Segment]:
    segments: list[Segment] = []
    for i, block in enumerate(blocks):
        what = f"{kind}[{i}]"
        if getattr(block, "attentions", None) is not None or not hasattr(block, "resnets"):
            raise TilingUnsupportedError(f"tiled VAE does not support {what} ({type(block).__name__})")
        after, after_halo, scale = _resample(block, what)
        n = len(block.resnets)
        for j, res in enumerate(block.resnets):
            last = j == n - 1
            segments += _resnet_segments(
                res,
                f"{what}.resnets[{j}]",
                after if last else None,
                after_halo if last else 0,
                scale if last else Fraction(1),
            )
    return segments


def decoder_segments(vae: nn.Module) -> list[Segment]:
    """The decoder after its mid block (up blocks, output norm/conv) as segments; raises if unsupported."""
    dec = vae.decoder
    segments = _block_segments(dec.up_blocks, "decoder.up_blocks")
    norm = _group_norm(dec.conv_norm_out, "decoder.conv_norm_out")
    halo = _conv_radius(dec.conv_out, "decoder.conv_out")
    segments.append(
        Segment(reads=("x",), run=lambda t: {"x": dec.conv_out(dec.conv_act(t["x"]))}, halo=halo, norm=norm)
    )
    return segments


def encoder_segments(vae: nn.Module) -> list[Segment]:
    """The encoder before its mid block (conv_in, down blocks) as segments; raises if unsupported."""
    enc = vae.encoder
    head = Segment(reads=("x",), run=lambda t: {"x": enc.conv_in(t["x"])}, halo=_conv_radius(enc.conv_in, "conv_in"))
    segments = [head, *_block_segments(enc.down_blocks, "encoder.down_blocks")]
    _group_norm(enc.conv_norm_out, "encoder.conv_norm_out")  # runs whole, but must be a plain GroupNorm
    return segments


def tiling_unsupported_reason(vae: nn.Module) -> str | None:
    """Why this VAE cannot be tiled (one line), or None if it can (both decode and encode)."""
    try:
        decoder_segments(vae)
        encoder_segments(vae)
    except (TilingUnsupportedError, AttributeError, TypeError) as e:
        return str(e) if isinstance(e, TilingUnsupportedError) else f"tiled VAE does not know this VAE ({e})"
    return None


# ---------------------------------------------------------------- whole-canvas GroupNorm statistics


class GroupStats:
    """Per-(sample, group) mean and variance of a canvas, merged from tile cores (Chan et al. 1979)."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        self.norm = norm
        self.count = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def add(self, core: Tensor) -> None:
        """Merge a tile core (N, C, h, w): its own var/mean in float32, the merge in float64."""
        n, g = core.shape[0], self.norm.num_groups
        var, mean = torch.var_mean(core.float().reshape(n, g, -1), dim=-1, correction=0)
        count = core[0].numel() // g
        mean, m2 = mean.double(), var.double() * count
        if self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = count, mean, m2
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.count * count / total)
        self.count = total

    def result(self) -> tuple[Tensor, Tensor]:
        """(mean, biased variance), each (N, groups) float32, as GroupNorm computes them."""
        if self.mean is None or self.m2 is None:
            raise RuntimeError("no tile was added")
        return self.mean.float(), (self.m2 / self.count).float()


def group_norm(x: Tensor, norm: nn.GroupNorm, mean: Tensor, var: Tensor) -> Tensor:
    """GroupNorm of a tile (N, C, h, w) with given (N, groups) statistics; computed in float32, x's dtype out."""
    n, c = x.shape[:2]
    g = norm.num_groups
    rstd = torch.rsqrt(var.to(x.device) + norm.eps)[:, :, None, None]
    y = (x.float().reshape(n, g, c // g, -1) - mean.to(x.device)[:, :, None, None]) * rstd
    y = y.reshape(x.shape)
    if norm.affine:
        y = y * norm.weight.float()[:, None, None] + norm.bias.float()[:, None, None]
    return y.to(x.dtype)


# ---------------------------------------------------------------- the lockstep driver


def split(cells: int, tile: int) -> list[tuple[int, int]]:
    """[start, stop) spans of near-equal size ≤ ``tile`` covering ``cells`` (latent cells)."""
    k = -(-cells // tile)
    return [(i * cells // k, (i + 1) * cells // k) for i in range(k)]


def run_segments(
    segments: list[Segment],
    canvases: Tensors,
    px_per_cell: int,
    tile: int,
    device: torch.device,
    park_device: torch.device,
    on_stats: StatsCallback | None = None,
) -> Tensors:
    """Run ``segments`` tile by tile, in lockstep, with whole-canvas GroupNorm statistics.

    Args:
        segments: From :func:`decoder_segments` or :func:`encoder_segments`.
        canvases: Named (N, C, H, W) canvases on ``park_device``; ``x`` is the main stream.
        px_per_cell: Pixels per latent cell of the canvases (1 at latent resolution).
        tile: Tile core size, latent cells (the grid is the same at every resolution).
        device: Where tiles are computed.
        park_device: Where whole canvases wait between segments.
        on_stats: Called with every GroupNorm's whole-canvas statistics.

    Returns:
        The canvases after the last segment, on ``park_device``.
    """
    x = canvases["x"]
    rows, cols = split(x.shape[-2] // px_per_cell, tile), split(x.shape[-1] // px_per_cell, tile)
    r = Fraction(px_per_cell)
    stats: tuple[Tensor, Tensor] | None = None
    for i, seg in enumerate(segments):
        if seg.norm is not None and stats is None:  # a canvas that did not come out of a segment
            acc = GroupStats(seg.norm)
            for y0, y1 in rows:
                for x0, x1 in cols:
                    acc.add(canvases[seg.norm_from][..., int(y0 * r) : int(y1 * r), int(x0 * r) : int(x1 * r)])
            stats = acc.result()
        if seg.norm is not None and stats is not None and on_stats is not None:
            on_stats(seg.norm, *stats)
        nxt = segments[i + 1] if i + 1 < len(segments) else None
        acc_next = GroupStats(nxt.norm) if nxt is not None and nxt.norm is not None else None
        height, width = canvases[seg.reads[0]].shape[-2:]
        out: Tensors = {}
        for y0, y1 in rows:
            for x0, x1 in cols:
                # Core and window (core + halo, clipped to the canvas), input pixels; cores scaled by s.
                cy0, cy1, cx0, cx1 = int(y0 * r), int(y1 * r), int(x0 * r), int(x1 * r)
                wy0, wy1 = max(0, cy0 - seg.halo), min(height, cy1 + seg.halo)
                wx0, wx1 = max(0, cx0 - seg.halo), min(width, cx1 + seg.halo)
                s = seg.scale
                # The range holds what the compute device holds for one tile: read, compute, statistics.
                with torch.profiler.record_function(TILE_RANGE):
                    t = {k: canvases[k][..., wy0:wy1, wx0:wx1].contiguous().to(device) for k in seg.reads}
                    if seg.norm is not None and stats is not None:
                        t[seg.norm_to] = group_norm(t[seg.norm_from], seg.norm, *stats)
                    result = seg.run(t)
                    del t
                    oy0, oy1, ox0, ox1 = (
                        int((cy0 - wy0) * s),
                        int((cy1 - wy0) * s),
                        int((cx0 - wx0) * s),
                        int((cx1 - wx0) * s),
                    )
                    cores = {name: value[..., oy0:oy1, ox0:ox1] for name, value in result.items()}
                    if acc_next is not None and nxt is not None and nxt.norm_from in cores:
                        acc_next.add(cores[nxt.norm_from])
                for name, core in cores.items():  # canvases are allocated outside the range
                    if name not in out:
                        shape = (*core.shape[:2], int(height * s), int(width * s))
                        out[name] = torch.empty(shape, dtype=core.dtype, device=park_device)
                    out[name][..., int(cy0 * s) : int(cy1 * s), int(cx0 * s) : int(cx1 * s)] = core
                del result, cores
        canvases = {k: v for k, v in canvases.items() if k not in seg.drops and k not in out} | out
        stats = acc_next.result() if acc_next is not None and acc_next.count else None
        r *= seg.scale
    return canvases


# ---------------------------------------------------------------- decode and encode


def _check_tile(tile: int) -> None:
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise InvalidInputError(f"tile must be a positive whole number of latent cells, got {tile!r}")


def _park(device: torch.device, park_device: torch.device | str | None) -> torch.device:
    if park_device is not None:
        return torch.device(park_device)
    return device if device.type == "cpu" else torch.device("cpu")


@torch.no_grad()
def tiled_decode(
    vae: nn.Module,
    z: Tensor,
    tile: int,
    park_device: torch.device | str | None = None,
    on_stats: StatsCallback | None = None,
) -> Tensor:
    """Decode like ``vae.decode(z).sample``, tile by tile, without seams.

    Args:
        vae: A diffusers ``AutoencoderKL`` (its own latent units, not scaled by ``scaling_factor``).
        z: (N, C, h, w) latents, in the VAE's dtype.
        tile: Tile core size, latent cells (the decoded tile is ``tile · f`` pixels).
        park_device: Where whole canvases wait between segments; default: the host when the VAE is on an
            accelerator, else the VAE's device.
        on_stats: Called with every synchronised GroupNorm's whole-canvas statistics (for tests).

    Returns:
        (N, 3, h·f, w·f) in the VAE's dtype, on ``park_device``.
    """
    _check_tile(tile)
    segments = decoder_segments(vae)
    device = next(vae.parameters()).device
    dec = vae.decoder
    x = z.to(device)
    if vae.post_quant_conv is not None:
        x = vae.post_quant_conv(x)
    # Global at latent resolution: the mid block attends over the whole latent.
    x = dec.mid_block(dec.conv_in(x), None)
    park = _park(device, park_device)
    return run_segments(segments, {"x": x.to(park)}, 1, tile, device, park, on_stats)["x"]


@torch.no_grad()
def tiled_encode(
    vae: nn.Module,
    images: Tensor,
    tile: int,
    park_device: torch.device | str | None = None,
    on_stats: StatsCallback | None = None,
) -> Tensor:
    """Encode like ``vae.encode(images).latent_dist.parameters``, tile by tile, without seams.

    Args:
        vae: A diffusers ``AutoencoderKL``.
        images: (N, 3, H, W) in [−1, 1], the VAE's dtype; H and W multiples of the scale factor f.
        tile: Tile core size, latent cells (``tile · f`` pixels of the image).
        park_device: As for :func:`tiled_decode`.
        on_stats: Called with every synchronised GroupNorm's whole-canvas statistics (for tests).

    Returns:
        (N, 2·C, H/f, W/f) moments (posterior mean, then log-variance), in the VAE's dtype, on the VAE's
        device.
    """
    _check_tile(tile)
    segments = encoder_segments(vae)
    f = 2 ** sum(1 for s in segments if s.scale < 1)
    if images.shape[-2] % f or images.shape[-1] % f:
        raise InvalidInputError(
            f"tiled VAE encode needs height and width in multiples of {f} px, got {images.shape[-2]}×{images.shape[-1]}"
        )
    device = next(vae.parameters()).device
    park = _park(device, park_device)
    x = run_segments(segments, {"x": images.to(park)}, f, tile, device, park, on_stats)["x"].to(device)
    enc = vae.encoder
    # Global at latent resolution: the mid block's attention and the output norm see the whole latent.
    x = enc.conv_out(enc.conv_act(enc.conv_norm_out(enc.mid_block(x))))
    return x if vae.quant_conv is None else vae.quant_conv(x)

"""Flux adapter (FLUX.1 dev and schnell): diffusers' ``FluxPipeline`` components as the engine's parts.

Text (``FluxPipeline.encode_prompt``): T5 hidden states (N, L, 4096), L = ``max_sequence_length`` (the
pipeline's 512, or the T5 tokenizer's limit if lower), padded to L and read without an attention mask; and
CLIP's pooled output (N, 768). Text position ids are zeros (L, 3).

Latents: one canvas cell is one Flux token, a 2 × 2 patch of the 16-channel VAE latent (64 channels, 16 px;
:class:`~multidiffusion.adapters.codecs.packed.PackedCodec`). A view's crop (B, 64, h, w) read row by row is exactly
the packed sequence ``FluxPipeline._pack_latents`` builds for an image of h × w tokens, so one view is one
ordinary Flux generation at the view's size. The initial noise is drawn at the VAE's resolution and packed
(``noise_patch=2``), as ``FluxPipeline.prepare_latents`` draws it.

Timesteps (``FluxPipeline.__call__``, step 5): sigmas = linspace(1, 1/n, n) and the dynamic shift
μ = ``calculate_shift(h·w)`` with the VIEW's token count h·w, the sequence length the transformer sees (not
the canvas's: the transformer never sees the canvas). Only what the chosen scheduler's ``set_timesteps``
accepts is passed (sigmas unless its config has ``use_flow_sigmas``, as the pipeline drops them; μ only when its
config has ``use_dynamic_shifting``, the only case where a scheduler reads it: DPM-Solver asserts otherwise).

Guidance: FLUX.1 dev (``guidance_embeds``) is guidance-distilled: g is an input of the transformer (default
3.5, the pipeline's) and no unconditional pass is made (the negative prompt is unused, as in the pipeline
without ``true_cfg_scale``; dev with both embedded and true guidance is not offered). FLUX.1 schnell has no
guidance input; its default g is 1 (no guidance); g > 1 runs true classifier-free guidance with the negative
prompt ("" unless given), which is ``FluxPipeline(true_cfg_scale=g, negative_prompt=…)``.

Image position ids (RoPE, Su et al. 2021; Flux uses 3 axes: (0, row, column)). Two choices, the denoiser's
``position_ids``:

* ``"local"`` (shipped): every view gets ids 0…h−1, 0…w−1, exactly what the model sees when it generates an
  image of the view's size. Every view is then an in-distribution Flux generation, and the same crop gives
  the same prediction wherever it lies on the canvas (like Stable Diffusion's convolutional UNet, which
  MultiDiffusion was designed around).
* ``"canvas"``: the view's top/left (cells) are added, so ids are canvas coordinates. Image–image attention
  depends only on relative positions (RoPE rotates q and k by their own angles, their product by the
  difference), so within a view nothing changes; only text ↔ image attention sees the absolute position,
  text ids being 0. A generation sees ids up to its size in tokens (0…63 per axis at 1024 px); a wide
  canvas's offsets go past any size the model was trained at (0…255 across a 4096 px panorama), out of
  distribution for exactly that text ↔ image term. Views at different
  offsets also need one transformer call each (ids are per call, not per row), which costs batching.

Measured on the tiny RANDOM-WEIGHT models of the tests (indicative only: trained weights may react
differently), noise on a 32 × 32-cell canvas, 8 × 8-cell views, t = 1000 and 500, relative to max|output|:
moving one crop by (4, 4) cells changes its "canvas" prediction by 5.1e-3–5.8e-3 (dev-style) and
1.6e-2–1.9e-2 (schnell-style), by 1.1e-2–1.3e-2 at offsets near 1000 cells, and by 0 under "local". Two
views overlapping by half disagree on their shared cells by 1.05e-2–1.24e-2 under "local" and
1.01e-2–1.22e-2 under "canvas" (dev-style; schnell-style 1.88e-2–2.17e-2 against 1.84e-2–2.01e-2): "canvas"
makes the shared cells' text ↔ image term the same in both views, but the disagreement comes almost all
from their different image context, which neither choice changes. So "canvas" buys little agreement while
taking the views of a large canvas out of distribution; "local" ships.
``FluxDenoiser(transformer, position_ids="canvas")``, ``from_components(…, position_ids="canvas")`` or setting
``model.denoiser.position_ids`` (the differentiable denoiser follows it) selects the other.

Ids are built in float32: ``FluxPosEmbed`` reads them as float32 anyway, and a bfloat16 id is no longer exact
past 256 (a canvas offset), while ids below 256 are exact in both, so "local" equals the pipeline bit for bit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from multidiffusion.adapters.codecs.packed import PackedCodec, tokens, untokens
from multidiffusion.adapters.codecs.vae import VaeCodec
from multidiffusion.adapters.customise.a1111_syntax import literal, parse
from multidiffusion.adapters.customise.control import (
    ControlKind,
    ControlUnit,
    FamilyControl,
    check_transformer_control,
    take_rows,
)
from multidiffusion.adapters.customise.prompt_weighting import TextChunks, WeightedPrompts
from multidiffusion.adapters.families.family import Family
from multidiffusion.adapters.loading.diffusers_files import (
    load_pretrained_pipeline,
    load_single_file_pipeline,
    to_device,
)
from multidiffusion.adapters.model.differentiable import SamplingDenoiser, differentiable_parts
from multidiffusion.adapters.model.loaded import LoadedModel, PromptLimit, first_step_flow
from multidiffusion.adapters.schedulers.flow import accepts, dynamic_shift
from multidiffusion.core.engine.views import View
from multidiffusion.core.errors import InvalidInputError

PIPELINE = "FluxPipeline"
FLUX_CONTROLNET = "flux-controlnet"
CONTROL_KINDS: tuple[ControlKind, ...] = (ControlKind(FLUX_CONTROLNET, "FluxControlNetModel", "Flux ControlNet"),)
FAMILY = Family(
    name="flux",
    title="Flux (dev and schnell)",
    module=__name__,
    pipelines=(PIPELINE,),
    checkpoint_types=("flux-dev", "flux-schnell"),
    control_kinds=CONTROL_KINDS,
)

PATCH = 2
"""VAE cells per canvas cell along each axis (Flux packs 2 × 2 latent patches into one token)."""
DEFAULT_SAMPLE_SIZE = 128
"""``FluxPipeline.default_sample_size``: VAE latent cells of the default 1024 px image (no config field has it)."""
MAX_SEQUENCE_LENGTH = 512
"""``FluxPipeline``'s default (and maximum) T5 sequence length."""
DEV_GUIDANCE = 3.5
"""``FluxPipeline``'s default embedded guidance scale."""
POSITION_IDS: tuple[str, ...] = ("local", "canvas")

# Rough peak activation bytes per image token of one transformer row, in units of hidden size D × bytes per
# element. Inference frees each block's activations before the next, so the peak is one block's: in a
# single-stream block the input and its norm (2D), q, k, v (3D), the MLP hidden state and its GELU (2 × 4D), their
# concatenation with the attention output (5D), the projection and residual (2D) ≈ 20D, plus the text tokens
# carried along and the rotary tables. Attention is fused (PyTorch SDPA: no tokens² score matrix). Measured on
# the CPU (peak RSS growth of one fp32 forward of a Flux-width double + single block pair, 4096 image + 512
# text tokens): 28.4 D (D = 768) and 24.5 D (D = 1536) elements per image token; 32 D leaves a margin. For
# FLUX.1 (D = 3072, bf16): ≈ 197 KB per token, ≈ 0.8 GB per 1024² view row (4096 tokens), next to 24 GB of weights.
ACTIVATION_HIDDEN_MULTIPLE = 32
DENOISER = "transformer"  # the denoising network's folder in a diffusers model


def view_cell_bytes(config: Any, itemsize: int) -> int:
    """Rough peak activation bytes per canvas cell (image token) of one transformer row (see above)."""
    get = config.__getitem__ if isinstance(config, dict) else lambda key: getattr(config, key)
    return ACTIVATION_HIDDEN_MULTIPLE * int(get("num_attention_heads")) * int(get("attention_head_dim")) * itemsize


def native_cells(config: Any) -> int:
    """The default image's size in canvas cells (``FluxPipeline.default_sample_size`` / 2: no config field has it)."""
    return DEFAULT_SAMPLE_SIZE // PATCH


def cell_px(vae_config: Any, config: Any) -> int:
    """Pixels per canvas cell: the VAE's downsampling times the 2 × 2 packing (16)."""
    get = vae_config.__getitem__ if isinstance(vae_config, dict) else lambda key: getattr(vae_config, key)
    return 2 ** (len(get("block_out_channels")) - 1) * PATCH


@dataclass(frozen=True)
class FluxCondition:
    """Flux's text conditioning for N canvases.

    Attributes:
        prompt_embeds: T5 hidden states (N, L, D_t5), in the transformer's dtype.
        pooled: CLIP pooled output (N, D_clip), in the transformer's dtype.
        guidance: The embedded guidance scale (guidance-distilled models such as FLUX.1 dev), else None.
    """

    prompt_embeds: Tensor
    pooled: Tensor
    guidance: float | None = None


def embed_guidance(condition: FluxCondition, guidance_scale: float) -> FluxCondition:
    """``condition`` with the guidance scale g embedded (the transformer's ``guidance`` input, FLUX.1 dev)."""
    return dataclasses.replace(condition, guidance=float(guidance_scale))


def image_ids(height: int, width: int, top: int = 0, left: int = 0, device: Any = None) -> Tensor:
    """Position ids (h·w, 3) of an h × w token grid, row by row: (0, top + i, left + j), float32.

    With ``top = left = 0`` this is ``FluxPipeline._prepare_latent_image_ids(…, h, w, …)``.
    """
    ids = torch.zeros(height, width, 3, dtype=torch.float32, device=device)
    ids[..., 1] += torch.arange(top, top + height, dtype=torch.float32, device=device)[:, None]
    ids[..., 2] += torch.arange(left, left + width, dtype=torch.float32, device=device)[None, :]
    return ids.reshape(height * width, 3)


def check_position_ids(value: str) -> str:
    """``value`` if it is one of :data:`POSITION_IDS`, else :class:`InvalidInputError`."""
    if value not in POSITION_IDS:
        raise InvalidInputError(f"unknown position_ids {value!r}; choose one of: {', '.join(POSITION_IDS)}")
    return value


class FluxDenoiser(SamplingDenoiser):
    """A diffusers ``FluxTransformer2DModel`` as a :class:`~multidiffusion.core.types.Denoiser`.

    Rows are packed crops (B, 64, h, w); each is read row by row as a token sequence (B, h·w, 64), predicted
    as ``FluxPipeline`` predicts it (timestep t / 1000 per row, the guidance per row for guidance-distilled
    models, pooled projections, T5 states, zero text ids, image ids) and put back. Conditions are
    :class:`FluxCondition`; the batch's conditions are concatenated in order. Output is the flow velocity,
    float32; the transformer runs in its own dtype.

    Args:
        transformer: The transformer.
        position_ids: ``"local"`` (each view's ids start at 0, as in a generation of the view's size) or
            ``"canvas"`` (the view's offset added); see the module docstring. Settable later.
    """

    def __init__(self, transformer: torch.nn.Module, position_ids: str = "local") -> None:
        self.transformer = transformer
        self.position_ids = position_ids

    @property
    def position_ids(self) -> str:
        """``"local"`` or ``"canvas"`` (see the module docstring)."""
        return self._position_ids

    @position_ids.setter
    def position_ids(self, value: str) -> None:
        self._position_ids = check_position_ids(value)

    @property
    def guidance_embeds(self) -> bool:
        """Whether the transformer takes the guidance scale as an input (FLUX.1 dev)."""
        return bool(getattr(self.transformer.config, "guidance_embeds", False))

    def network_inputs(self, x: Tensor, conds: Sequence[FluxCondition], views: Sequence[View] | None = None) -> dict:
        """The transformer's inputs besides x and t for this batch: text states, pooled projections, and the
        guidance per row (guidance-distilled models; else None)."""
        n = x.shape[0] // len(conds)
        embeds = torch.cat([c.prompt_embeds for c in conds]) if len(conds) > 1 else conds[0].prompt_embeds
        pooled = torch.cat([c.pooled for c in conds]) if len(conds) > 1 else conds[0].pooled
        if embeds.shape[0] != x.shape[0]:
            raise InvalidInputError(
                f"{x.shape[0]} latents but {embeds.shape[0]} text embeddings; each condition needs one row per canvas"
            )
        guidance = None
        if self.guidance_embeds:
            if any(c.guidance is None for c in conds):
                raise InvalidInputError(
                    "this Flux transformer embeds the guidance scale; the condition carries none (set it with "
                    "embed_guidance)"
                )
            guidance = torch.tensor([c.guidance for c in conds], dtype=torch.float32, device=x.device)
            guidance = guidance.repeat_interleave(n)
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled, "guidance": guidance}

    def groups(self, rows: int, views: Sequence[View] | None, n: int) -> dict[tuple[int, int], list[int]]:
        """Rows that share image ids, by the ids' offset (one group unless ``position_ids`` is ``"canvas"``)."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i in range(rows // n):
            offset = (0, 0)
            if self.position_ids == "canvas" and views is not None:
                offset = (views[i].top, views[i].left)
            groups.setdefault(offset, []).extend(range(i * n, (i + 1) * n))
        return groups

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        conds: Sequence[FluxCondition],
        views: Sequence[View] | None = None,
        *,
        track_grad: bool = False,
        residuals: dict[str, Any] | None = None,
    ) -> Tensor:
        """x: (len(conds)·N, 64, h, w) → velocity of the same shape, float32 (see the class docstring);
        ``residuals``: ControlNet block samples, one row per x row."""
        rows = x.shape[0]
        inputs = self.network_inputs(x, conds, views)
        # Rows that share image ids go through the transformer together (its ids are per call, not per row).
        groups = self.groups(rows, views, rows // len(conds))
        with torch.set_grad_enabled(track_grad and torch.is_grad_enabled()):
            if len(groups) == 1:
                ((offset, _),) = groups.items()
                return self._forward(x, t, inputs, offset, residuals)
            outputs, order = [], []
            for offset, members in groups.items():
                index = torch.tensor(members, device=x.device)
                part = take_rows({"inputs": inputs, "residuals": residuals}, index, rows)
                outputs.append(self._forward(x.index_select(0, index), t, part["inputs"], offset, part["residuals"]))
                order += members
            inverse = torch.empty(rows, dtype=torch.long)
            inverse[torch.tensor(order)] = torch.arange(rows)
            return torch.cat(outputs).index_select(0, inverse.to(x.device))

    def _forward(
        self,
        x: Tensor,
        t: Tensor,
        inputs: dict[str, Any],
        offset: tuple[int, int],
        residuals: dict[str, Any] | None = None,
    ) -> Tensor:
        """One transformer call for rows sharing the image ids of ``offset``; (B, 64, h, w) → float32."""
        transformer = self.transformer
        dtype = transformer.dtype
        b, _, height, width = x.shape
        embeds = inputs["encoder_hidden_states"]
        out = transformer(
            hidden_states=tokens(x).to(dtype),
            timestep=flux_timestep(t, b, dtype, x.device),
            guidance=inputs["guidance"],
            pooled_projections=inputs["pooled_projections"].to(dtype),
            encoder_hidden_states=embeds.to(dtype),
            txt_ids=torch.zeros(embeds.shape[1], 3, dtype=torch.float32, device=x.device),
            img_ids=image_ids(height, width, *offset, device=x.device),
            **(residuals or {}),
            return_dict=False,
        )[0]
        return untokens(out, height, width).float()


def flux_timestep(t: Tensor, rows: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``FluxPipeline.__call__``'s timestep input: t.expand(B) in the latents' dtype, divided by 1000."""
    return torch.as_tensor(t, device=device).expand(rows).to(dtype) / 1000


class FluxControl(FamilyControl):
    """Flux ControlNets (``FluxControlNetModel``), as ``FluxControlNetPipeline`` runs them. InstantX's read the guide
    encoded by the VAE (its mean) and packed like the canvas; XLabs' (with an ``input_hint_block``) read the pixels
    in [−1, 1], 16 per canvas cell. Each row gets its view's crop and its own text (with true classifier-free
    guidance the negative rows too, where the pipeline reuses the positive samples); the samples go into the
    transformer's double and single blocks."""

    def __init__(self, base: FluxDenoiser, codec: Any) -> None:
        super().__init__(base, CONTROL_KINDS)
        self.codec = codec

    def check(self, network: torch.nn.Module, kind: str, label: str) -> None:
        super().check(network, kind, label)
        check_transformer_control(network, self.base.transformer, label)  # type: ignore[attr-defined]
        if getattr(network, "union", False):
            raise InvalidInputError(f"ControlNet {label!r} is a union ControlNet (modes); those are not supported yet")

    def guide(self, network: torch.nn.Module, kind: str, pixels: Tensor) -> tuple[Tensor, int]:
        if network.input_hint_block is not None:  # XLabs: pixels, normalised as the VAE's input
            return pixels * 2.0 - 1.0, self.codec.scale_factor
        return self.codec.encode(pixels * 2.0 - 1.0), 1  # packed, (z − shift) · scale

    def residuals(
        self, unit: ControlUnit, x: Tensor, t: Tensor, inputs: dict[str, Any], crops: Tensor, views: Sequence[View]
    ) -> dict:
        net, base = unit.network, self.base
        rows = x.shape[0]
        hint = net.input_hint_block is not None
        samples: list[Any] = []
        order: list[int] = []
        for offset, members in base.groups(rows, views, rows // len(views)).items():  # type: ignore[attr-defined]
            index = torch.tensor(members, device=x.device)
            part = take_rows(inputs, index, rows)
            x_part, cond = x.index_select(0, index), crops.index_select(0, index)
            b, _, height, width = x_part.shape
            embeds = part["encoder_hidden_states"]
            guidance = part["guidance"] if net.config.guidance_embeds else None
            samples.append(
                net(
                    hidden_states=tokens(x_part).to(net.dtype),
                    controlnet_cond=cond if hint else tokens(cond),
                    conditioning_scale=unit.scale,
                    timestep=flux_timestep(t, b, net.dtype, x.device),
                    guidance=guidance,
                    pooled_projections=part["pooled_projections"].to(net.dtype),
                    encoder_hidden_states=embeds.to(net.dtype),
                    txt_ids=torch.zeros(embeds.shape[1], 3, dtype=torch.float32, device=x.device),
                    img_ids=image_ids(height, width, *offset, device=x.device),
                    return_dict=False,
                )
            )
            order += members
        inverse = torch.empty(rows, dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(rows)
        inverse = inverse.to(x.device)

        def joined(k: int) -> list[Tensor] | None:
            if samples[0][k] is None:
                return None
            return [torch.cat([s[k][j] for s in samples]).index_select(0, inverse) for j in range(len(samples[0][k]))]

        return {
            "controlnet_block_samples": joined(0),
            "controlnet_single_block_samples": joined(1),
            "controlnet_blocks_repeat": hint,
        }


class FluxTextEncoder:
    """Texts (N,) → :class:`FluxCondition`, as ``FluxPipeline.encode_prompt`` (prompt_2 = prompt).

    Args:
        tokenizer, text_encoder: CLIP: the pooled output, tokens padded to the tokenizer's ``model_max_length``.
        tokenizer_2, text_encoder_2: T5: the last hidden states, tokens padded to ``max_sequence_length``.
        dtype: The transformer's dtype (the embeddings are stored in it).
        max_sequence_length: T5 tokens; None: 512 (the pipeline's default), or the T5 tokenizer's
            ``model_max_length`` if lower.
    """

    def __init__(
        self,
        tokenizer: Any,
        text_encoder: torch.nn.Module,
        tokenizer_2: Any,
        text_encoder_2: torch.nn.Module,
        dtype: torch.dtype,
        max_sequence_length: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.tokenizer_2 = tokenizer_2
        self.text_encoder_2 = text_encoder_2
        self.dtype = dtype
        if max_sequence_length is None:
            max_sequence_length = min(MAX_SEQUENCE_LENGTH, int(getattr(tokenizer_2, "model_max_length", 512)))
        self.max_sequence_length = max_sequence_length

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> FluxCondition:
        texts = list(texts)
        clip = self.tokenizer(
            texts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        pooled = self.text_encoder(clip.input_ids.to(self.text_encoder.device), output_hidden_states=False)
        t5 = self.tokenizer_2(
            texts,
            padding="max_length",
            max_length=self.max_sequence_length,
            truncation=True,
            return_tensors="pt",
        )
        embeds = self.text_encoder_2(t5.input_ids.to(self.text_encoder_2.device), output_hidden_states=False)[0]
        return FluxCondition(embeds.to(self.dtype), pooled.pooler_output.to(self.dtype))


def weighted_prompts(encoder: Any) -> WeightedPrompts | None:
    """T5's hidden states with A1111 weighting, as compel's ``CompelForFlux``
    (:mod:`~multidiffusion.adapters.customise.prompt_weighting`): T5 reads one sequence of ``max_sequence_length``
    tokens, so long prompts are still cut there and a BREAK only separates words; CLIP's pooled vector reads the
    literal text (compel weighs no pooled output). None for an encoder other than :class:`FluxTextEncoder`."""
    if not isinstance(encoder, FluxTextEncoder):
        return None
    t5 = TextChunks(encoder.tokenizer_2, encoder.text_encoder_2, cut_at=encoder.max_sequence_length)

    def pooled_of(texts: list[str]) -> Tensor:
        """CLIP's pooled output (N, D) of the literal texts, as the family's encoder (unweighted, cut at 77)."""
        tokenizer, clip = encoder.tokenizer, encoder.text_encoder
        ids = tokenizer(
            texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        return clip(ids.to(clip.device), output_hidden_states=False).pooler_output

    def same_length(conditions: Sequence[FluxCondition]) -> list[FluxCondition]:
        lengths = {int(c.prompt_embeds.shape[1]) for c in conditions}
        if len(lengths) > 1:
            raise ValueError(f"Flux conditions of different token lengths {sorted(lengths)}")
        return list(conditions)

    @torch.no_grad()
    def encode(texts: Sequence[str]) -> FluxCondition:
        # one T5 sequence (no chunks): a BREAK joins its segments
        embeds = [t5.segment(tuple(f for segment in parse(text) for f in segment))[0] for text in texts]
        pooled = pooled_of([literal(text) for text in texts])
        return FluxCondition(torch.cat(embeds).to(encoder.dtype), pooled.to(embeds[0].device, encoder.dtype))

    return WeightedPrompts(encode=encode, same_length=same_length)


def timestep_options(scheduler: Any, steps: int, view_cells: tuple[int, int]) -> dict[str, Any]:
    """``set_timesteps`` keyword arguments as ``FluxPipeline.__call__`` passes them, for views of h × w tokens.

    sigmas = linspace(1, 1/steps, steps) unless the scheduler's config has ``use_flow_sigmas`` (the pipeline
    then drops them); μ = ``calculate_shift(h·w, …)`` from the scheduler's config when it shifts dynamically
    (``use_dynamic_shifting``; otherwise the pipeline's μ is ignored, or refused by DPM-Solver). Each only if
    the scheduler's ``set_timesteps`` accepts it (FlowMatchHeun takes neither).
    """
    options: dict[str, Any] = {}
    if accepts(scheduler, "sigmas") and not scheduler.config.get("use_flow_sigmas", False):
        options["sigmas"] = np.linspace(1.0, 1 / steps, steps)
    return {**options, **dynamic_shift(scheduler, view_cells)}
    return options


def from_components(
    source: str,
    transformer: Any,
    vae: Any,
    text_encoder: Any,
    tokenizer: Any,
    text_encoder_2: Any,
    tokenizer_2: Any,
    scheduler_config: Any,
    *,
    position_ids: str = "local",
    max_sequence_length: int | None = None,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
) -> LoadedModel:
    """Assemble a :class:`LoadedModel` from ``FluxPipeline`` components already in memory.

    ``position_ids`` and ``max_sequence_length`` as in :class:`FluxDenoiser` and :class:`FluxTextEncoder`;
    ``sample_size`` is the default image size in VAE latent cells (``FluxPipeline.default_sample_size``).
    """
    codec = PackedCodec(VaeCodec(vae), patch=PATCH)
    denoiser = FluxDenoiser(transformer, position_ids)
    dtype = transformer.dtype
    itemsize = torch.finfo(dtype).bits // 8
    config = transformer.config
    distilled = bool(getattr(config, "guidance_embeds", False))
    # A scheduler built in code has no _class_name in its config (one read from a folder has): FluxPipeline's
    # is a FlowMatchEulerDiscreteScheduler, and the class decides how runs treat the model (flow matching).
    scheduler_config = {"_class_name": "FlowMatchEulerDiscreteScheduler", **dict(scheduler_config)}
    encoder = FluxTextEncoder(tokenizer, text_encoder, tokenizer_2, text_encoder_2, dtype, max_sequence_length)
    return LoadedModel(
        source=source,
        family=FAMILY.name,
        denoiser=denoiser,
        codec=codec,
        encode_prompts=encoder,
        scheduler_config=scheduler_config,
        native_window=sample_size // PATCH,
        device=transformer.device,
        dtype=dtype,
        bytes_per_view_cell=view_cell_bytes(config, itemsize),
        default_guidance_scale=DEV_GUIDANCE if distilled else 1.0,
        differentiable=differentiable_parts(denoiser, codec.decode_differentiable, transformer, vae),
        default_scheduler=str(scheduler_config["_class_name"]),
        noise_patch=PATCH,
        timestep_options=timestep_options,
        embed_guidance=embed_guidance if distilled else None,
        first_step=first_step_flow,  # FluxImg2ImgPipeline.get_timesteps
        control=FluxControl(denoiser, codec),
        # T5 carries the prompt (CLIP gives only the pooled vector): warn where T5 cuts it
        prompt_limits=(PromptLimit.of("T5", tokenizer_2, encoder.max_sequence_length),),
        prompt_weighting=weighted_prompts,
        components={
            "transformer": transformer,
            "vae": vae,
            "text_encoder": text_encoder,
            "tokenizer": tokenizer,
            "text_encoder_2": text_encoder_2,
            "tokenizer_2": tokenizer_2,
        },
    )


def from_pipeline(source: str, pipe: Any, device: torch.device, **kwargs: Any) -> LoadedModel:
    """A loaded ``FluxPipeline`` as a :class:`LoadedModel` on ``device``; ``kwargs`` as for
    :func:`from_components`."""
    to_device(pipe, device)
    kwargs.setdefault("sample_size", int(getattr(pipe, "default_sample_size", DEFAULT_SAMPLE_SIZE)))
    return from_components(
        source,
        pipe.transformer,
        pipe.vae,
        pipe.text_encoder,
        pipe.tokenizer,
        pipe.text_encoder_2,
        pipe.tokenizer_2,
        {"_class_name": type(pipe.scheduler).__name__, **pipe.scheduler.config},
        **kwargs,
    )


def load_pretrained(
    source: str, dtype: torch.dtype, device: torch.device, *, allow_pickle: bool = False
) -> LoadedModel:
    """Load a diffusers-format Flux model (``FluxPipeline``) from a hub repo id or a local folder."""
    return from_pipeline(source, load_pretrained_pipeline(PIPELINE, source, dtype, allow_pickle=allow_pickle), device)


def load_single_file(path: str, dtype: torch.dtype, device: torch.device, config: str | None = None) -> LoadedModel:
    """Load an original-format Flux checkpoint (``.safetensors``); ``config`` as in
    :func:`~multidiffusion.adapters.loading.diffusers_files.load_single_file_pipeline` (a Flux checkpoint usually
    holds the transformer alone: the text encoders and VAE come from the config's folder or repo)."""
    return from_pipeline(path, load_single_file_pipeline(PIPELINE, path, dtype, config), device)

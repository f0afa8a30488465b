"""Stable Diffusion 3 / 3.5 adapter (``StableDiffusion3Pipeline``): three text encoders, the MMDiT
(``SD3Transformer2DModel``) as a flow-matching Denoiser over 2 × 2 patches, the 16-channel VAE.

Conditioning, as ``StableDiffusion3Pipeline.encode_prompt`` computes it (Esser et al. 2024, "Scaling Rectified
Flow Transformers", §5.2):

* Sequence (N, 77 + L₃, D₃): the penultimate hidden states of CLIP-L and CLIP-G side by side (768 + 1280 = 2048),
  zero-padded to the T5 width D₃ (4096 = the transformer's ``joint_attention_dim``), then T5-XXL's last hidden
  states (L₃ = 256 tokens) appended along the sequence. Without a T5 encoder (``text_encoder_3`` None, a
  supported way to run SD 3 in less memory) its part is zeros, as the pipeline does.
* Pooled (N, 2048): both CLIPs' pooled projections side by side.

Latents: a canvas cell is one 2 × 2 patch of the VAE's 16-channel latent (64 channels, 16 px;
``adapters.codecs.packed``), so every view lies on whole transformer patches. The denoiser unpacks a batch to the VAE
layout (B, 16, 2h, 2w), runs the transformer with the timestep expanded per row (``t.expand(B)``, as the pipeline
does) and packs its flow-velocity output v = ε − x₀ back. The VAE codec applies SD 3's shift and scaling factors.

Positions: the transformer's patch embedding adds a positional table of ``pos_embed_max_size``² patches (192² for
SD 3 and 3.5), cropped around its centre to the input's size (``PatchEmbed.cropped_pos_embed``). A view therefore
sees the same positions whatever its place on the canvas: its output depends on its content and size only, and
the same crop at two canvas offsets gives the same prediction (tests/adapters/families/test_sd3.py). Each view is
denoised as the stand-alone image of its size the model was trained on, which is what MultiDiffusion asks of a view. The
``views`` argument of the Denoiser contract is accordingly unused. A view wider or taller than the table
(``pos_embed_max_size`` cells: 3072 px for SD 3) cannot be embedded and is refused with one line.

Timesteps: ``FlowMatchEulerDiscreteScheduler`` with the model's ``shift`` (3.0). Where the scheduler config has
``use_dynamic_shifting`` (some SD 3.5 configs), the pipeline passes μ from the image's sequence length; here that
is the view's (h · w tokens), since each view is what the model sees (:func:`timestep_options`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from multidiffusion.adapters.codecs.packed import PackedCodec, pack, unpack
from multidiffusion.adapters.codecs.vae import VaeCodec
from multidiffusion.adapters.customise.control import (
    ControlKind,
    ControlUnit,
    FamilyControl,
    check_transformer_control,
)
from multidiffusion.adapters.families.family import Family
from multidiffusion.adapters.loading.diffusers_files import (
    load_pretrained_pipeline,
    load_single_file_pipeline,
    to_device,
)
from multidiffusion.adapters.model.differentiable import SamplingDenoiser, differentiable_parts
from multidiffusion.adapters.model.loaded import LoadedModel, PromptLimit, first_step_flow
from multidiffusion.adapters.schedulers.flow import dynamic_shift
from multidiffusion.adapters.schedulers.names import check_scheduler_name
from multidiffusion.core.engine.views import View
from multidiffusion.core.errors import InvalidInputError

PIPELINE = "StableDiffusion3Pipeline"
SD3_CONTROLNET = "sd3-controlnet"
CONTROL_KINDS: tuple[ControlKind, ...] = (ControlKind(SD3_CONTROLNET, "SD3ControlNetModel", "SD 3 ControlNet"),)
FAMILY = Family(
    name="sd3",
    title="Stable Diffusion 3 / 3.5",
    module=__name__,
    pipelines=(PIPELINE,),
    checkpoint_types=("sd3", "sd35_medium", "sd35_large"),
    control_kinds=CONTROL_KINDS,
)
DEFAULT_GUIDANCE_SCALE = 7.0  # StableDiffusion3Pipeline.__call__'s default
MAX_SEQUENCE_LENGTH = 256  # T5 tokens, StableDiffusion3Pipeline.__call__'s default max_sequence_length
OPTIONAL_TEXT = ("text_encoder_3", "tokenizer_3")  # may be null in model_index.json: then T5 is zeros


DENOISER = "transformer"  # the denoising network's folder in a diffusers model


def view_cell_bytes(config: Any, itemsize: int) -> int:
    """Rough peak activation bytes per canvas cell of one transformer row (``config``: the transformer's)."""
    # One canvas cell is one image token of width D = heads · head_dim (SD 3 medium 1536, 3.5 large 2432).
    # Inference keeps no activations between blocks; inside a joint block the live tensors per image token
    # are the residual stream and its modulated norm, q, k, v with their head-split and image‖text copies,
    # the attention output, or in the feed-forward its 4D hidden layer and GELU: about 12–16 D. Attention
    # runs as SDPA (flash or memory-efficient on GPUs, flash on CPUs), never holding the token² scores.
    # Measured (peak RSS growth of one forward, float32 CPU, SD 3 medium width, 64 × 64 cells + 333 text
    # tokens): 14 D per cell; with SD 3.5's dual attention and RMS q/k norms 16 D. 32 D · itemsize is that
    # with a 2× margin: SD 3 medium in float16 ≈ 98 KB per cell, 0.4 GB per 1024² view row.
    return 32 * _hidden(config) * itemsize


def native_cells(config: Any) -> int:
    """The training resolution in canvas cells: ``sample_size`` is in VAE cells (128 → 64 cells, 1024 px)."""
    return int(_get(config, "sample_size")) // int(_get(config, "patch_size"))


def cell_px(vae_config: Any, config: Any) -> int:
    """Pixels per canvas cell: the VAE's downsampling times the transformer's patch (16)."""
    return 2 ** (len(_get(vae_config, "block_out_channels")) - 1) * int(_get(config, "patch_size"))


def _hidden(config: Any) -> int:
    return int(_get(config, "num_attention_heads")) * int(_get(config, "attention_head_dim"))


def _get(config: Any, key: str) -> Any:
    return config[key] if isinstance(config, dict) else getattr(config, key)


@dataclass(frozen=True)
class Sd3Condition:
    """N prompts encoded for the SD 3 transformer.

    Attributes:
        prompt_embeds: (N, 77 + L₃, D₃) the joint text sequence (``encoder_hidden_states``).
        pooled: (N, D_L + D_G) both CLIPs' pooled projections (``pooled_projections``).
    """

    prompt_embeds: Tensor
    pooled: Tensor

    def __len__(self) -> int:
        return int(self.prompt_embeds.shape[0])


class Sd3Denoiser(SamplingDenoiser):
    """The ``SD3Transformer2DModel`` as a :class:`~multidiffusion.core.types.Denoiser` on packed latents.

    Conditions are :class:`Sd3Condition`, concatenated in batch order. Input (B, 16·p², h, w) float32 canvas
    cells; output the flow velocity in the same layout, float32. The transformer runs in its own dtype. Views are
    not used: the positional embedding depends on the input size only (see the module docstring).

    Args:
        transformer: The MMDiT.
        cell_px: Pixels per canvas cell (16), for error messages.
    """

    def __init__(self, transformer: torch.nn.Module, cell_px: int = 16) -> None:
        self.transformer = transformer
        self.patch = int(transformer.config.patch_size)
        table = getattr(transformer.config, "pos_embed_max_size", None)
        self.max_cells: int | None = int(table) if table else None
        self.cell_px = cell_px

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        conds: Sequence[Sd3Condition],
        views: Sequence[View] | None = None,
        *,
        track_grad: bool = False,
        residuals: dict[str, Any] | None = None,
    ) -> Tensor:
        """x: (len(conds)·N, 16·p², h, w) → the transformer's output, float32; ``track_grad`` follows the ambient
        grad mode (SyncDiffusion's gradient), else no graph is built; ``residuals``: ControlNet block samples."""
        n = x.shape[0] // len(conds)
        if any(len(c) != n for c in conds) or n * len(conds) != x.shape[0]:
            raise InvalidInputError(
                f"{x.shape[0]} latents but conditions of {[len(c) for c in conds]} entries; each condition needs one "
                "entry per canvas"
            )
        h, w = x.shape[-2:]
        if self.max_cells is not None and max(h, w) > self.max_cells:
            m, f = self.max_cells, self.cell_px
            raise InvalidInputError(
                f"a view of {h * f}×{w * f} px exceeds this model's positional table of {m}×{m} latent cells "
                f"({m * f} px); use a smaller window (--window)"
            )
        inputs = self.network_inputs(x, conds, views)
        timestep = torch.as_tensor(t, device=x.device).reshape(()).expand(x.shape[0])  # the pipeline's t.expand(B)
        with torch.set_grad_enabled(track_grad and torch.is_grad_enabled()):
            out = self.transformer(
                hidden_states=unpack(x, self.patch).to(self.transformer.dtype),
                timestep=timestep,
                **inputs,
                **(residuals or {}),
                return_dict=False,
            )[0]
        return pack(out.float(), self.patch)

    def network_inputs(self, x: Tensor, conds: Sequence[Sd3Condition], views: Sequence[View] | None = None) -> dict:
        """The transformer's text inputs for this batch: ``encoder_hidden_states`` and ``pooled_projections``."""
        dtype, device = self.transformer.dtype, x.device
        return {
            "encoder_hidden_states": torch.cat([c.prompt_embeds for c in conds]).to(device, dtype),
            "pooled_projections": torch.cat([c.pooled for c in conds]).to(device, dtype),
        }


class Sd3Control(FamilyControl):
    """SD 3 ControlNets (``SD3ControlNetModel``), as ``StableDiffusion3ControlNetPipeline`` runs them: the guide is
    encoded by the VAE (its mean; the pipeline samples it) and packed like the canvas, each row gets its view's crop,
    and the block samples go into the transformer's blocks. InstantX's ControlNets (``force_zeros_for_pooled_
    projection``) see their guide without the VAE's shift and zero pooled projections, as the pipeline gives them."""

    def __init__(self, base: Sd3Denoiser, codec: Any) -> None:
        super().__init__(base, CONTROL_KINDS)
        self.codec = codec

    def check(self, network: torch.nn.Module, kind: str, label: str) -> None:
        super().check(network, kind, label)
        transformer = self.base.transformer  # type: ignore[attr-defined]
        check_transformer_control(network, transformer, label)
        if getattr(network.config, "use_pos_embed", True) is False:  # SD 3.5 8b: shares the transformer's table
            network.pos_embed = network._get_pos_embed_from_transformer(transformer).to(network.device, network.dtype)

    def guide(self, network: torch.nn.Module, kind: str, pixels: Tensor) -> tuple[Tensor, int]:
        latents = self.codec.encode(pixels * 2.0 - 1.0)  # packed, (z − shift) · scale
        if getattr(network.config, "force_zeros_for_pooled_projection", False):  # InstantX: z · scale
            inner = self.codec.inner
            latents = latents + inner.shift_factor * inner.scaling_factor
        return latents, 1

    def residuals(
        self, unit: ControlUnit, x: Tensor, t: Tensor, inputs: dict[str, Any], crops: Tensor, views: Sequence[View]
    ) -> dict:
        net, patch = unit.network, self.base.patch  # type: ignore[attr-defined]
        pooled = inputs["pooled_projections"]
        if getattr(net.config, "force_zeros_for_pooled_projection", False):
            pooled = torch.zeros_like(pooled)
        text = inputs["encoder_hidden_states"] if net.config.joint_attention_dim is not None else None
        samples = net(
            hidden_states=unpack(x, patch).to(net.dtype),
            timestep=torch.as_tensor(t, device=x.device).reshape(()).expand(x.shape[0]),
            encoder_hidden_states=text,
            pooled_projections=pooled,
            controlnet_cond=unpack(crops, patch),
            conditioning_scale=unit.scale,
            return_dict=False,
        )[0]
        return {"block_controlnet_hidden_states": list(samples)}


class Sd3TextEncoder:
    """Texts (N,) → :class:`Sd3Condition`, as ``StableDiffusion3Pipeline.encode_prompt`` (no clip skip, the same
    text for all three encoders).

    Args:
        tokenizers: ``tokenizer``, ``tokenizer_2`` (CLIP-L, CLIP-G); both pad to the first one's
            ``model_max_length`` (77), as the pipeline does.
        text_encoders: ``text_encoder``, ``text_encoder_2`` (``CLIPTextModelWithProjection``).
        tokenizer_3: The T5 tokenizer, or None.
        text_encoder_3: ``T5EncoderModel``, or None: zeros of (N, ``max_sequence_length``, ``joint_attention_dim``).
        joint_attention_dim: The transformer's text width D₃.
        max_sequence_length: T5 tokens L₃ (256).
    """

    def __init__(
        self,
        tokenizers: Sequence[Any],
        text_encoders: Sequence[Any],
        tokenizer_3: Any,
        text_encoder_3: Any,
        joint_attention_dim: int,
        max_sequence_length: int = MAX_SEQUENCE_LENGTH,
    ) -> None:
        self.tokenizers = list(tokenizers)
        self.text_encoders = list(text_encoders)
        self.tokenizer_3 = tokenizer_3
        self.text_encoder_3 = text_encoder_3
        self.joint_attention_dim = joint_attention_dim
        self.max_sequence_length = max_sequence_length

    def clip(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """(N, 77, D_L + D_G) penultimate hidden states side by side, (N, D_L + D_G) pooled projections."""
        max_length = self.tokenizers[0].model_max_length  # the pipeline's tokenizer_max_length, for both
        dtype = self.text_encoders[0].dtype
        hidden: list[Tensor] = []
        pooled: list[Tensor] = []
        for tokenizer, encoder in zip(self.tokenizers, self.text_encoders, strict=True):
            ids = tokenizer(
                texts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
            ).input_ids
            out = encoder(ids.to(encoder.device), output_hidden_states=True)
            pooled.append(out[0])
            hidden.append(out.hidden_states[-2].to(dtype))
        device = hidden[0].device
        return torch.cat([h.to(device) for h in hidden], dim=-1), torch.cat([p.to(device) for p in pooled], dim=-1)

    def t5(self, texts: list[str], device: torch.device) -> Tensor:
        """(N, L₃, D₃) T5's last hidden states, or zeros without a T5 encoder."""
        if self.text_encoder_3 is None or self.tokenizer_3 is None:
            shape = (len(texts), self.max_sequence_length, self.joint_attention_dim)
            return torch.zeros(shape, device=device, dtype=self.text_encoders[0].dtype)
        ids = self.tokenizer_3(
            texts,
            padding="max_length",
            max_length=self.max_sequence_length,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        ).input_ids
        encoder = self.text_encoder_3
        return encoder(ids.to(encoder.device))[0].to(device, encoder.dtype)

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> Sd3Condition:
        texts = list(texts)
        clip_embeds, pooled = self.clip(texts)
        t5_embeds = self.t5(texts, clip_embeds.device)
        # CLIP's 2048 columns zero-padded to T5's 4096, then the T5 tokens after the 77 CLIP tokens
        clip_embeds = torch.nn.functional.pad(clip_embeds, (0, t5_embeds.shape[-1] - clip_embeds.shape[-1]))
        return Sd3Condition(torch.cat([clip_embeds, t5_embeds], dim=-2), pooled)


def make_timestep_options(
    model_scheduler_config: Mapping[str, Any],
) -> Callable[[Any, int, tuple[int, int]], dict[str, Any]]:
    """``timestep_options(scheduler, steps, (h, w))`` for :class:`LoadedModel`: what ``StableDiffusion3Pipeline.
    __call__`` passes to ``retrieve_timesteps`` besides the step count.

    That is ``mu`` from the view's token count h · w (a canvas cell is one patch) when the scheduler's config
    has ``use_dynamic_shifting`` and its ``set_timesteps`` takes ``mu``; nothing otherwise. The shift
    parameters come from the scheduler's config, else the model's (a scheduler of another class built from the
    model's config may not keep them), else the pipeline's defaults.
    """
    base = dict(model_scheduler_config)

    def timestep_options(scheduler: Any, steps: int, view_cells: tuple[int, int]) -> dict[str, Any]:
        own = dict(scheduler.config)
        if not own.get("use_dynamic_shifting"):  # the scheduler's own choice, not the model's
            return {}
        return dynamic_shift(scheduler, view_cells, base, max_shift=1.16)

    return timestep_options


def default_scheduler_of(scheduler_config: Mapping[str, Any]) -> str:
    """The scheduler class the model's config names (FlowMatchEulerDiscreteScheduler), else ``flow_euler``."""
    name = str(scheduler_config.get("_class_name", ""))
    try:
        return check_scheduler_name(name)
    except InvalidInputError:
        return "flow_euler"


def from_components(
    source: str,
    transformer: Any,
    vae: Any,
    text_encoder: Any,
    tokenizer: Any,
    text_encoder_2: Any,
    tokenizer_2: Any,
    text_encoder_3: Any,
    tokenizer_3: Any,
    scheduler_config: Any,
) -> LoadedModel:
    """Assemble a :class:`LoadedModel` from SD 3 components already in memory (on their device);
    ``text_encoder_3``/``tokenizer_3`` may be None (T5 embeddings are then zeros)."""
    if int(vae.config.latent_channels) != int(transformer.config.in_channels):
        raise InvalidInputError(
            f"this VAE has {vae.config.latent_channels} latent channels but the transformer takes "
            f"{transformer.config.in_channels}"
        )
    patch = int(transformer.config.patch_size)
    codec = PackedCodec(VaeCodec(vae), patch=patch)
    denoiser = Sd3Denoiser(transformer, codec.scale_factor)
    encoder = Sd3TextEncoder(
        [tokenizer, tokenizer_2],
        [text_encoder, text_encoder_2],
        tokenizer_3,
        text_encoder_3,
        int(transformer.config.joint_attention_dim),
    )
    config = transformer.config
    itemsize = torch.finfo(transformer.dtype).bits // 8
    return LoadedModel(
        source=source,
        family=FAMILY.name,
        denoiser=denoiser,
        codec=codec,
        encode_prompts=encoder,
        scheduler_config=dict(scheduler_config),
        native_window=native_cells(config),
        device=transformer.device,
        dtype=transformer.dtype,
        bytes_per_view_cell=view_cell_bytes(config, itemsize),
        default_guidance_scale=DEFAULT_GUIDANCE_SCALE,
        differentiable=differentiable_parts(denoiser, codec.decode_differentiable, transformer, vae),
        components={
            "transformer": transformer,
            "vae": vae,
            "text_encoder": text_encoder,
            "tokenizer": tokenizer,
            "text_encoder_2": text_encoder_2,
            "tokenizer_2": tokenizer_2,
            "text_encoder_3": text_encoder_3,
            "tokenizer_3": tokenizer_3,
        },
        default_scheduler=default_scheduler_of(scheduler_config),
        noise_patch=patch,
        timestep_options=make_timestep_options(scheduler_config),
        first_step=first_step_flow,  # StableDiffusion3Img2ImgPipeline.get_timesteps
        control=Sd3Control(denoiser, codec),
        # Both CLIP encoders read the first 77 tokens (pooled and per-token); T5, where present, 256.
        prompt_limits=(
            PromptLimit.of("CLIP", tokenizer),
            *((PromptLimit.of("T5", tokenizer_3, encoder.max_sequence_length),) if text_encoder_3 is not None else ()),
        ),
    )


def from_pipeline(source: str, pipe: Any, device: torch.device) -> LoadedModel:
    """A loaded ``StableDiffusion3Pipeline`` as a :class:`LoadedModel` on ``device``."""
    to_device(pipe, device)
    return from_components(
        source,
        pipe.transformer,
        pipe.vae,
        pipe.text_encoder,
        pipe.tokenizer,
        pipe.text_encoder_2,
        pipe.tokenizer_2,
        pipe.text_encoder_3,
        pipe.tokenizer_3,
        named_config(pipe.scheduler),
    )


def named_config(scheduler: Any) -> dict[str, Any]:
    """A scheduler's config with its ``_class_name`` (an instance built in memory has none in its config; the
    engine reads the class name to tell flow-matching configs from diffusion ones)."""
    return {"_class_name": type(scheduler).__name__, **dict(scheduler.config)}


def absent_components(index: Mapping[str, Any]) -> dict[str, None]:
    """The components to pass as None: the IP-Adapter image encoder (unused here), and T5 where
    ``model_index.json`` names it null (diffusers would otherwise refuse to build the pipeline)."""
    absent: dict[str, None] = {"image_encoder": None, "feature_extractor": None}
    for name in OPTIONAL_TEXT:
        entry = index.get(name)
        if not isinstance(entry, list | tuple) or not entry or entry[0] is None:
            absent[name] = None
    return absent


def load_pretrained(
    source: str, dtype: torch.dtype, device: torch.device, *, allow_pickle: bool = False
) -> LoadedModel:
    """Load a diffusers-format SD 3 / 3.5 model from a hub repo id or a local folder (T5 optional)."""
    from multidiffusion.adapters.families.registry import model_index

    pipe = load_pretrained_pipeline(
        PIPELINE, source, dtype, allow_pickle=allow_pickle, **absent_components(model_index(source))
    )
    return from_pipeline(source, pipe, device)


def load_single_file(path: str, dtype: torch.dtype, device: torch.device, config: str | None = None) -> LoadedModel:
    """Load an original-format SD 3 / 3.5 checkpoint (``.safetensors``); ``config`` as in
    :func:`~multidiffusion.adapters.loading.diffusers_files.load_single_file_pipeline`. Components the checkpoint lacks
    (often the text encoders) come from ``config``; a ``config`` folder without T5 runs without it."""
    from pathlib import Path

    from multidiffusion.adapters.families.registry import model_index

    absent: dict[str, None] = {"image_encoder": None, "feature_extractor": None}
    if config is not None and Path(config).expanduser().is_dir():
        absent = absent_components(model_index(config))
    pipe = load_single_file_pipeline(PIPELINE, path, dtype, config, **absent)
    return from_pipeline(path, pipe, device)

"""What a run adds to the model: ControlNets and T2I-Adapters, LoRAs, embeddings, prompt weighting.

:class:`Customisation` is what the caller asks for (the API's ``customise=``, the CLI's ``--controlnet``,
``--lora``, ``--embedding``, ``--no-prompt-weighting``); :class:`Customised` is one run of it: the networks
loaded, prompts encoded with the right LoRA set active, tagged conditions for regions with their own control
or LoRA set, and the wrapped denoiser (docs/control.md, docs/design.md §8).
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multidiffusion.adapters import LoadedModel
from multidiffusion.adapters.customise.embeddings import EmbeddingSpec, embedding_labels, load_embeddings
from multidiffusion.adapters.customise.host import check_weights_file
from multidiffusion.adapters.customise.lora import LoraSpec, LoraSwitch, lora_labels
from multidiffusion.adapters.customise.prompt_weighting import literal, weighted_encoder
from multidiffusion.core import GuidedCondition
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.tags import BySet, Tagged, Untagged, adapters_of
from multidiffusion.core.types import Denoiser, ViewTask
from multidiffusion.pipeline.customise.cache import CustomisationCache
from multidiffusion.pipeline.customise.control_spec import ControlLoader, ControlSpec, check_controls
from multidiffusion.pipeline.customise.recorded_files import recorded_digests
from multidiffusion.pipeline.run.conditions import guided_condition

PromptSpec = tuple[Sequence[str], Sequence[str], float, float]  # prompts, negative prompts, g, φ of one condition


@dataclass(frozen=True)
class RegionExtras:
    """What one condition (a region, the background, a panorama's prompt) adds to the run's own.

    Attributes:
        control: Control specs for this condition's views only.
        loras: LoRA specs for this condition's views only (with the run's own they make its LoRA set).
    """

    control: tuple[ControlSpec, ...] = ()
    loras: tuple[LoraSpec, ...] = ()


@dataclass(frozen=True)
class Customisation:
    """Control and customisation for every view of a run.

    Attributes:
        control: ControlNets / T2I-Adapters with their guide images
        (:class:`~multidiffusion.pipeline.customise.control_spec.
            ControlSpec`), summed as diffusers' multi-ControlNet does.
        loras: LoRA files with their scales (:class:`~multidiffusion.adapters.customise.lora.LoraSpec`), for every view.
        embeddings: Textual-inversion embeddings (:class:`~multidiffusion.adapters.customise.embeddings.EmbeddingSpec`).
        prompt_weighting: Read A1111 weighting syntax (``(word:1.2)``, ``[word]``) and prompts longer than the
            text encoder's window in chunks, where the family supports it; False: prompts are literal.
        allow_pickle: Allow pickled files (``.ckpt``, ``.bin``, ``.pt``) for every file loaded.
    """

    control: tuple[ControlSpec, ...] = ()
    loras: tuple[LoraSpec, ...] = ()
    embeddings: tuple[EmbeddingSpec, ...] = ()
    prompt_weighting: bool = True
    allow_pickle: bool = False

    def check(self, regional: Sequence[RegionExtras] = ()) -> None:
        """Cheap checks of everything asked for (files exist, settings in range), before anything loads."""
        check_controls(tuple(self.control), self.allow_pickle)
        for i, extras in enumerate(regional):
            check_controls(tuple(extras.control), self.allow_pickle, f"region {i} control")
        for what, specs, kind in (
            ("LoRA", [*self.loras, *(s for e in regional for s in e.loras)], LoraSpec),
            ("embedding", self.embeddings, EmbeddingSpec),
        ):
            for spec in specs:
                if not isinstance(spec, kind):
                    raise InvalidInputError(f"expected a {kind.__name__} for a {what}, got {type(spec).__name__}")
                check_weights_file(spec.path, what, self.allow_pickle)

    def refuse_sync(self, sync: bool, regional: Sequence[RegionExtras] = ()) -> None:
        """SyncDiffusion's gradient does not pass through control or per-region LoRA sets yet: refuse the pair."""
        if sync and (self.control or any(extras.control or extras.loras for extras in regional)):
            raise InvalidInputError(
                "sync cannot be combined with ControlNets, T2I-Adapters or per-region LoRAs yet; drop --sync or them"
            )

    def record(self, regional: Sequence[RegionExtras] = ()) -> dict[str, Any] | None:
        """For metadata; None when nothing is added (a plain run records nothing). Files are named, never their
        folders, and ``sha256`` maps each local file's name to its hash
        (:func:`~multidiffusion.pipeline.customise.recorded_files.recorded_digests`)."""
        record: dict[str, Any] = {}
        if self.control:
            record["control"] = [spec.record() for spec in self.control]
        if any(extras.control for extras in regional):
            record["region_control"] = [[spec.record() for spec in extras.control] for extras in regional]
        if self.loras:
            record["loras"] = lora_labels(self.loras)
        if any(extras.loras for extras in regional):
            record["region_loras"] = [lora_labels(extras.loras) for extras in regional]
        if self.embeddings:
            record["embeddings"] = embedding_labels(self.embeddings)
        if not self.prompt_weighting:
            record["prompt_weighting"] = False
        digests = recorded_digests(
            [*self.loras, *(s for e in regional for s in e.loras)],
            self.embeddings,
            [*self.control, *(s for e in regional for s in e.control)],
        )
        if digests:  # each file by its own name: a rerun finds it again in the folders it is given
            record["sha256"] = digests
        return record or None


@dataclass
class Customised:
    """One run's customisation: networks loaded, conditions encoded and tagged, the denoiser wrapped.

    Args:
        model: The loaded model.
        custom: What the run asks for.
        regional: Per condition (in the run's condition order), what it adds; empty: nothing.
        canvas_px: (height, width) of the canvas in pixels (the guide images are fitted to it).
        input_image: The run's input image (an upscale's), the guide of a ControlNet given without one.
        sync: Whether the run synchronises views (refused with control for now).
        cache: What the pipeline keeps between runs (its control networks), read and updated by this run.
    """

    model: LoadedModel
    custom: Customisation
    regional: Sequence[RegionExtras]
    canvas_px: tuple[int, int]
    input_image: Any = None
    sync: bool = False
    cache: CustomisationCache = field(kw_only=True)
    units: tuple[Any, ...] = field(init=False, default=())
    regional_units: list[tuple[Any, ...]] = field(init=False, default_factory=list)
    switch: LoraSwitch | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.custom.check(self.regional)
        self.custom.refuse_sync(self.sync, self.regional)
        height, width = self.canvas_px
        wanted = self.custom.control or any(extras.control for extras in self.regional)
        if wanted:
            loader = ControlLoader(self.model, self.custom.allow_pickle, self.cache.control_networks)
            self.units = tuple(loader.unit(s, height, width, self.input_image) for s in self.custom.control)
            self.regional_units = [
                tuple(loader.unit(s, height, width, self.input_image) for s in extras.control)
                for extras in self.regional
            ]
            loader.keep_only_used()
        else:  # a run without control frees the last run's networks
            self.cache.control_networks.clear()
        self._load_embeddings()
        loras = [*self.custom.loras, *(spec for extras in self.regional for spec in extras.loras)]
        if loras:
            self.switch = LoraSwitch(self.model, loras, allow_pickle=self.custom.allow_pickle)
        self.weighted = weighted_encoder(self.model) if self.custom.prompt_weighting else None

    def _load_embeddings(self) -> None:
        """The run's embeddings, each loaded once per model (a later run naming the same file reuses it: the model
        records the files loaded into its tokenizers)."""
        loaded = self.model.state.embeddings
        new = []
        for spec in self.custom.embeddings:
            file = Path(spec.path).expanduser().resolve()
            if loaded.get(spec.token.lower()) == file:
                continue
            new.append(spec)
        if new:
            load_embeddings(self.model, new, allow_pickle=self.custom.allow_pickle)  # records them in loaded

    def lora_set(self, index: int) -> tuple[LoraSpec, ...]:
        """The LoRA set of condition ``index``: the run's LoRAs and the condition's own."""
        own = self.regional[index].loras if index < len(self.regional) else ()
        return (*self.custom.loras, *own)

    @property
    def tags(self) -> bool:
        """Whether any condition carries its own extras (then conditions are :class:`Tagged`)."""
        return any(self.regional_units) or any(extras.loras for extras in self.regional)

    def conditions(self, specs: Sequence[PromptSpec]) -> list[GuidedCondition]:
        """Every condition of the run (one per spec, in order): each encoded with its LoRA set active, weighted
        where the family supports it, all padded to one token length so any of them share a batch, and tagged
        with their own extras when some condition has any."""
        texts = [text for prompts, negatives, _, _ in specs for text in (*prompts, *negatives)]
        weighted = self.weighted if self.weighted is not None and self._needs_weighting(texts) else None
        if self.weighted is None:
            self._warn_literal(texts)
        encode = weighted.encode if weighted is not None else self.model.encode_prompts
        # Weighting reads CLIP in 77-token chunks, so only the other encoders (Flux's T5) still cut prompts.
        limits = tuple(lim for lim in self.model.prompt_limits if weighted is None or lim.encoder != "CLIP")
        built = []
        for index, (prompts, negatives, scale, rescale) in enumerate(specs):
            if self.switch is not None:
                self.switch.activate(self.lora_set(index))
            built.append(guided_condition(self.model, prompts, negatives, scale, rescale, encode=encode, limits=limits))
        if weighted is not None:
            built = self._same_length(built)
        if self.switch is not None and not self.tags:  # one set for every view: it stays active
            self.switch.activate(self.lora_set(0))
        if not self.tags:
            return built
        tagged = []
        for index, condition in enumerate(built):
            control = self.regional_units[index] if index < len(self.regional_units) else ()
            key: Hashable = self.lora_set(index)

            def tag(inner: Any, control: tuple[Any, ...] = control, key: Hashable = key) -> Any:
                return None if inner is None else Tagged(inner, control, key)

            tagged.append(GuidedCondition(tag(condition.positive), tag(condition.negative), *_scales(condition)))
        return tagged

    def _needs_weighting(self, texts: Sequence[str]) -> bool:
        """Whether any text uses weighting syntax or is longer than a text encoder's window: plain short prompts
        go through the family's own encoder, exactly as without weighting."""
        limits = self.model.prompt_limits
        return any(literal(t) != t or any(lim.count(t) > lim.max_tokens for lim in limits) for t in texts)

    def _same_length(self, conditions: list[GuidedCondition]) -> list[GuidedCondition]:
        """Positive and negative conditions of the run padded to the longest (long prompts take 77·k tokens)."""
        assert self.weighted is not None  # internal: conditions() calls this only when self.weighted is set
        inner = [c.positive for c in conditions] + [c.negative for c in conditions if c.negative is not None]
        padded = iter(self.weighted.same_length(inner))
        positives = [next(padded) for _ in conditions]
        return [
            GuidedCondition(p, next(padded) if c.negative is not None else None, *_scales(c))
            for p, c in zip(positives, conditions, strict=True)
        ]

    def _warn_literal(self, texts: Sequence[str]) -> None:
        """One warning when a prompt uses weighting syntax that this run reads literally."""
        if any(literal(text) != text for text in texts):
            why = "is off" if not self.custom.prompt_weighting else f"is not available for {self.model.family}"
            warnings.warn(
                f"prompt weighting {why}: weighting syntax such as (word:1.2) is read as plain text",
                UserWarning,
                stacklevel=4,
            )

    def order(self, tasks: list[ViewTask], conditions: Sequence[GuidedCondition]) -> list[ViewTask]:
        """The tasks with those of one adapter set together (stable): adapters switch once per set per step."""
        keys = [adapters_of(c.positive) for c in conditions]
        if len(set(keys)) <= 1:
            return tasks
        rank = {key: i for i, key in enumerate(dict.fromkeys(keys))}
        return sorted(tasks, key=lambda task: rank[keys[task.condition]])

    def wrap(self, denoiser: Denoiser, timesteps: Sequence[Any]) -> Denoiser:
        """The model's denoiser with this run's control (acting over ``timesteps``, the steps run)."""
        if self.units or any(self.regional_units):  # ControlLoader refused families without control
            assert self.model.control is not None
            regional = [unit for units in self.regional_units for unit in units]
            controlled = self.model.control(self.units, regional)
            controlled.set_timesteps(timesteps)
            return controlled
        return Untagged(denoiser) if self.tags else denoiser

    def plain(self, denoiser: Denoiser) -> Denoiser:
        """The model's denoiser without control (noise inversion runs it), tags removed."""
        return Untagged(denoiser) if self.tags else denoiser

    def by_set(self, denoiser: Denoiser) -> Denoiser:
        """``denoiser`` switching LoRA sets per batch (as it is when every view has one set)."""
        if self.switch is None or not any(extras.loras for extras in self.regional):
            return denoiser
        return BySet(denoiser, self.switch.activate)

    def close(self) -> None:
        """Give the model back as it was loaded (LoRAs unloaded; embeddings stay, for the next run)."""
        if self.switch is not None:
            self.switch.close()
            self.switch = None


def _scales(condition: GuidedCondition) -> tuple[float, float]:
    return condition.guidance_scale, condition.guidance_rescale


def guide_of(image: Any) -> Any:
    """The guide image a ControlNet without its own takes: the run's input image as placed on the canvas
    ((3, H, W) in [0, 1]; an upscale's enlargement: ControlNet tile), None without one."""
    return None if image is None else ((image.image[0] + 1.0) / 2.0).clamp(0.0, 1.0)

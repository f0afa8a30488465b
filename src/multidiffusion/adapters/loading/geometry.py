"""What a model's configs say about its geometry, read without its weights: its family, latent cell and native
window, so that sizes, layouts and views are checked before a model takes seconds to minutes to load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from multidiffusion.adapters.model.loaded import LoadedModel
from multidiffusion.core.errors import InvalidInputError


@dataclass(frozen=True)
class ModelGeometry:
    """The sizes a model imposes on a run, as its loaded :class:`LoadedModel` reports them.

    Attributes:
        family: The family's name (``LoadedModel.family``).
        granularity_px: Pixels per latent cell: canvas, window and stride are multiples of it.
        native_window: The model's training resolution, latent cells (the default window).
        default_stride_px: The stride a run uses when none is given, px; None: window / 8.
    """

    family: str
    granularity_px: int
    native_window: int
    default_stride_px: int | None = None

    @property
    def native_px(self) -> int:
        """The default window, px."""
        return self.native_window * self.granularity_px


def geometry_of(model: LoadedModel) -> ModelGeometry:
    """A loaded model's geometry."""
    return ModelGeometry(model.family, model.granularity_px, model.native_window, model.default_stride_px)


def geometry_before_loading(source: str, config: str | None = None, *, fetch: bool = True) -> ModelGeometry | None:
    """The geometry of the model ``source`` names, without loading its weights, or None where it cannot be read so:
    then the checks run once the model is loaded.

    Read from: a spec string's model, which has no weights to load (``toy``); the ``model_index.json``, VAE and
    denoiser configs of a diffusers folder, of a hub repo id (from the hub cache; with ``fetch``, those small JSON
    files are downloaded when missing unless ``HF_HUB_OFFLINE`` is set, never a weight file), or of the ``config``
    folder or repo id of a single-file checkpoint (whose own family, read from its tensor names for a
    ``.safetensors`` file, must match). A single file without ``config`` and a pickled one give None.
    """
    from multidiffusion.adapters.families.registry import family_claiming, family_of_checkpoint, family_of_pipeline
    from multidiffusion.adapters.loading.resolve import config_before_loading

    claimed = family_claiming(source)
    if claimed is not None:  # a spec model is built in memory from its string: building it is cheap
        return geometry_of(claimed.adapter().load(source, device=torch.device("cpu")))
    path = Path(source).expanduser()
    if path.is_file() and (config is None or path.suffix != ".safetensors"):
        return None
    index = config_before_loading(source, "model_index.json", config, fetch=fetch)
    try:
        family = family_of_pipeline(str(index["_class_name"]), source) if index else None
    except (InvalidInputError, KeyError, TypeError):
        return None  # loading says what is wrong with it
    if family is None:
        return None
    if path.is_file():
        try:
            if family_of_checkpoint(str(path)) != family:
                return None
        except InvalidInputError:
            return None
    module = family.adapter()
    denoiser_folder = getattr(module, "DENOISER", None)
    if denoiser_folder is None or not hasattr(module, "cell_px") or not hasattr(module, "native_cells"):
        return None
    vae = config_before_loading(source, "vae/config.json", config, fetch=fetch)
    denoiser = config_before_loading(source, f"{denoiser_folder}/config.json", config, fetch=fetch)
    if not vae or not denoiser:
        return None
    try:
        cell, native = int(module.cell_px(vae, denoiser)), int(module.native_cells(denoiser))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        return None
    if cell < 1 or native < 1:
        return None
    return ModelGeometry(family.name, cell, native)

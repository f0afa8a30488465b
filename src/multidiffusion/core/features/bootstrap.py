"""Bootstrapping (MultiDiffusion §4.2): early on, a foreground view sees its region on a plain background.

For the first steps, each foreground (view, region) crop is replaced outside the region's mask by a
random constant-colour image, encoded and noised to the current level:

    x_t^{(i)} ← m ⊙ x_t^{(i)} + (1 − m) ⊙ noise_t(E(c)),   c a random colour

so the region's prompt is denoised on its own and its object fills even a loose box. The fused crops
(docs/design.md §3) carry the change: with binary masks the canvas X is unchanged, since the replaced cells
have zero weight in that task; only the model's view of the region differs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from multidiffusion.core.engine.crop import crop, view_indices
from multidiffusion.core.engine.noise import add_noise
from multidiffusion.core.types import Codec, HookContext, ViewTask


def bootstrap_steps(fraction: float, num_steps: int) -> int:
    """Steps that bootstrap: ``fraction · num_steps`` rounded half up; ``fraction`` in [0, 1]."""
    return math.floor(fraction * num_steps + 0.5)


def constant_colour_latents(
    codec: Codec, count: int, size: tuple[int, int], generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """``count`` random constant-colour images of ``size`` latent cells, encoded: (count, C, h, w).

    Colours are uniform in [−1, 1]³, drawn from ``generator``.
    """
    colours = torch.rand(count, 3, generator=generator).mul(2).sub(1)
    h, w = size
    f = codec.scale_factor
    images = colours[:, :, None, None].expand(count, 3, h * f, w * f).to(device)
    return codec.encode(images).float()


class Bootstrap:
    """A view hook that bootstraps foreground tasks during the first ``steps`` steps.

    Args:
        tasks: All tasks of the run (the hook is told which ones each batch holds).
        masks: Task index → (h, w) region mask inside that task's view; tasks not listed are background.
        backgrounds: (K, C, h, w) encoded constant-colour images to choose from.
        noise: (N, C, H, W) fixed canvas noise used to noise the backgrounds (cropped per view).
        steps: Bootstrap while ``step_index < steps``.
        generator: Chooses a background per (step, task), in task order, at the start of each step (every rank
            draws the same choices, whichever tasks it runs).
    """

    def __init__(
        self,
        tasks: Sequence[ViewTask],
        masks: dict[int, Tensor],
        backgrounds: Tensor,
        noise: Tensor,
        steps: int,
        generator: torch.Generator | None,
    ) -> None:
        self.masks = masks
        self.backgrounds = backgrounds
        self.noise = noise
        self.steps = steps
        self.generator = generator
        _, _, height, width = noise.shape
        self.index = view_indices([t.view for t in tasks], height, width, noise.device)
        self.choices: dict[int, int] = {}  # this step's background per foreground task

    def begin_step(self, canvas: Tensor, step_index: int, t: Tensor, scheduler: object, shard: object) -> None:
        """Draw this step's background for every foreground task, in task order (called on every rank)."""
        self.choices = {}
        if step_index < self.steps:
            for task_index in sorted(self.masks):
                self.choices[task_index] = int(torch.randint(len(self.backgrounds), (1,), generator=self.generator))

    def __call__(self, x: Tensor, context: HookContext) -> Tensor:
        if context.step_index >= self.steps:
            return x
        n = context.num_canvases
        out = x.clone()
        t = context.timestep.reshape(1)
        for j, task_index in enumerate(context.task_indices):
            mask = self.masks.get(task_index)
            if mask is None:
                continue
            choice = self.choices.get(task_index)
            if choice is None:  # a loop that does not call begin_step: draw in call order, as one process does
                choice = int(torch.randint(len(self.backgrounds), (1,), generator=self.generator))
            view = context.tasks[j].view
            size = (view.height, view.width)
            noise = crop(self.noise, self.index[task_index : task_index + 1], size)  # (N, C, h, w)
            background = self.backgrounds[choice : choice + 1].expand_as(noise)
            noisy = add_noise(context.scheduler, background, noise, t.expand(n))
            rows = slice(j * n, (j + 1) * n)
            out[rows] = x[rows] * mask + noisy.to(x.dtype) * (1 - mask)
        return out

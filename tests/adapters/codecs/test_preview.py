"""The live preview's latent-to-RGB map, fitted to the model's own codec, and the x̂₀ the engine reports per step."""

from __future__ import annotations

import torch

from multidiffusion.adapters.codecs.preview import fit_preview
from multidiffusion.pipeline import MultiDiffusionPipeline


def test_the_toy_models_map_is_exact():
    """The toy codec is the identity on [−1, 1] pixels: the fitted map is (x + 1) / 2 exactly (least squares on an
    exactly affine relation)."""
    toy = MultiDiffusionPipeline.from_pretrained("toy")
    preview = fit_preview(toy.model.codec)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert (preview(toy.model.codec.encode(x)) - (x + 1) / 2).abs().max() < 1e-5


def test_the_fit_leaves_the_global_rng_alone(small_pipe):
    before = torch.random.get_rng_state()
    preview = fit_preview(small_pipe.model.codec)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert preview.weights.shape == (4, 3) and preview.bias.shape == (3,)
    out = preview(torch.randn(1, 4, 5, 7, generator=torch.Generator().manual_seed(1)))
    assert out.shape == (1, 3, 5, 7) and float(out.min()) >= 0 and float(out.max()) <= 1


def test_steps_report_their_x0_where_the_scheduler_does(small_pipe):
    """DDIM reports x̂₀ (``pred_original_sample``) with each step; DPM-Solver++ does not (None)."""
    seen: dict[str, list] = {"ddim": [], "dpmpp_2m": []}
    for name, states in seen.items():
        small_pipe("sky", height=128, width=128, num_inference_steps=2, scheduler=name, output_type="latent",
                   progress=False, callback_on_step_end=lambda s, states=states: states.append(s))  # fmt: skip
    assert all(s.denoised is not None and s.denoised.shape == s.latents.shape for s in seen["ddim"])
    assert all(s.denoised is None for s in seen["dpmpp_2m"])

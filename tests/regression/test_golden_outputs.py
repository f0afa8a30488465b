"""The regression gate for the redesign of issue 25: outputs must not change when modules move.

Every case of ``golden_cases.CASES`` (toy, tiny SD / SDXL / SD 3 / Flux, regions, sync, global view, image inputs,
ControlNet, LoRA, two ranks) was recorded before the move by ``record_golden.py`` into ``data/golden.safetensors``;
each test here recomputes one and compares it with the recording:

- on the recorded kernel path (same ``torch.backends.cpu.get_cpu_capability()`` and torch version, as
  ``data/golden.json`` records them) the output must be bit-identical (``torch.equal``): moving code changes no
  arithmetic, so any difference is a regression;
- on another path (AVX2 vs AVX-512 sum in other orders) only closeness can hold:
  ``max|out − ref| ≤ 1e-4 · max(1, max|ref|)``, far above the float rounding of these few steps and far below what
  a changed default, seed order or formula moves.

If a case fails after the move, fix the code, not the recording.
"""

from __future__ import annotations

import json

import pytest
import torch

import tests.regression.golden_cases as g

pytestmark = pytest.mark.float_sensitive

REL = 1e-4  # of max(1, max|ref|), off the recorded kernel path only


@pytest.fixture(scope="module")
def golden() -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors.torch import load_file

    return load_file(str(g.GOLDEN_TENSORS)), json.loads(g.GOLDEN_JSON.read_text())


def test_every_case_is_recorded(golden):
    """The recording and the case list agree: a case cannot silently drop out of the gate (nor a stale one stay)."""
    tensors, record = golden
    assert set(tensors) == set(record["cases"]) == set(g.CASES)


@pytest.mark.parametrize("name", list(g.CASES))
def test_output_is_unchanged(golden, name):
    tensors, record = golden
    ref, meta = tensors[name], record["cases"][name]
    out = g.compute(name)
    assert out.shape == ref.shape and out.dtype == ref.dtype, f"{name}: {tuple(out.shape)} vs {tuple(ref.shape)}"
    diff = float((out.double() - ref.double()).abs().max()) if torch.isfinite(out).all() else float("inf")
    where = f"{name} ({meta['description']}); recorded on {meta['cpu_capability']} torch {meta['torch']}"
    if g.same_kernel_path(meta):
        assert torch.equal(out, ref), f"{where}: not bit-identical on the recorded kernel path, max|diff| = {diff:.3g}"
    else:
        atol = REL * max(1.0, float(ref.abs().max()))
        now = g.environment()
        assert diff <= atol, (
            f"{where}; now {now['cpu_capability']} torch {now['torch']}: max|diff| = {diff:.3g} > {atol:.3g}"
        )


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("family", ["sd", "sdxl", "sd3", "flux"])
def test_tiny_builders_give_the_same_weights_twice(family):
    """The gate means something only if the tiny models it loads are the same every time: seeded builders."""
    first, second = g.build_components(family), g.build_components(family)
    networks = [k for k, v in first.items() if isinstance(v, torch.nn.Module)]
    assert networks
    for key in networks:
        a, b = _state(first[key]), _state(second[key])
        assert a.keys() == b.keys(), key
        assert all(torch.equal(a[n], b[n]) for n in a), f"{family} {key}: weights differ between two builds"


def test_the_controlnet_and_lora_builders_are_seeded(tmp_path):
    """The ControlNet and the LoRA file are drawn from seeded generators too: two builds are equal."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    unet = g.components("sd")["unet"]
    a, b = _state(g.tiny_controlnet(unet, seed=1)), _state(g.tiny_controlnet(unet, seed=1))
    assert all(torch.equal(a[n], b[n]) for n in a)
    files = [
        g.save_lora(StableDiffusionPipeline, g.components("sd"), tmp_path / f"{i}" / "x.safetensors", seed=0)
        for i in range(2)
    ]
    a, b = load_file(str(files[0])), load_file(str(files[1]))
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)

"""The core imports and samples with diffusers and transformers unimportable (docs/design.md §1)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

BLOCKER = textwrap.dedent(
    """
    import sys

    BLOCKED = ("diffusers", "transformers", "lpips")

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Blocker())
    for name in BLOCKED:
        assert name not in sys.modules, name
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"the blocker let {name} through")

    def loaded():
        return sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    """
)

SAMPLE = textwrap.dedent(
    """
    from types import SimpleNamespace

    import torch

    import multidiffusion.core as core

    class Scheduler:
        init_noise_sigma = 1.0
        timesteps = torch.tensor([900, 500])

        def scale_model_input(self, x, t):
            return x

        def step(self, model_output, t, x):
            return SimpleNamespace(prev_sample=x - 0.1 * model_output)

    steps = []

    def denoiser(x, t, conds, views=None):
        return 0.5 * x + torch.cat([c.expand(x.shape[0] // len(conds)) for c in conds])[:, None, None, None]

    tasks = core.panorama_tasks(8, 20, 8, 4, weights="feathered", circular=True)
    x_T = core.initial_noise((2, 4, 8, 20), torch.Generator().manual_seed(0), "cpu", torch.float32)
    conditions = [core.GuidedCondition(torch.tensor([0.1, 0.2]), torch.tensor([0.0, 0.0]), guidance_scale=3.0)]
    out = core.sample(
        core.ClassifierFreeGuidance(denoiser),
        Scheduler(),
        x_T,
        tasks,
        conditions,
        callback=lambda s: steps.append(s.step_index),
        view_batch_size=2,
    )
    assert out.shape == (2, 4, 8, 20), out.shape
    assert bool(torch.isfinite(out).all())
    assert steps == [0, 1], steps
    assert not torch.equal(out, x_T)
    assert loaded() == [], loaded()
    print("core-ok")
    """
)

IMPORT_ALL = textwrap.dedent(
    """
    import importlib
    import pkgutil

    import multidiffusion.core

    names = [m.name for m in pkgutil.iter_modules(multidiffusion.core.__path__, "multidiffusion.core.")]
    assert len(names) >= 5, names
    for name in names:
        importlib.import_module(name)
    assert loaded() == [], loaded()
    print("imports-ok", len(names))
    """
)


@pytest.fixture(scope="module")
def isolated_run() -> subprocess.CompletedProcess[str]:
    """One fresh interpreter: block the packages, import every core module, sample two steps."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + IMPORT_ALL + SAMPLE],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def test_every_core_module_imports_without_diffusers_and_transformers(
    isolated_run: subprocess.CompletedProcess[str],
) -> None:
    assert isolated_run.returncode == 0, isolated_run.stderr
    assert "imports-ok" in isolated_run.stdout


def test_core_samples_without_diffusers_and_transformers(isolated_run: subprocess.CompletedProcess[str]) -> None:
    assert isolated_run.returncode == 0, isolated_run.stderr
    assert "core-ok" in isolated_run.stdout

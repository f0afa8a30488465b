"""Shared fixtures: tiny random SD components built in-process; the hub is never reached."""

from __future__ import annotations

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")
# as the command line sets it before transformers loads (interfaces/cli/main.py main): in-process CLI tests would
# otherwise see transformers' once-per-process notices (no torchvision) in whichever test triggers them first
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# the weights-hash cache of the model fingerprints goes to a temporary folder, not the user's ~/.cache
os.environ["MULTIDIFFUSION_CACHE_DIR"] = tempfile.mkdtemp(prefix="multidiffusion-cache-")

from pathlib import Path
from typing import Any

import pytest

from tests.helpers.tiny_models import loaded, make_components, save_model_folder


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Tiny SD components with a native window of 64 latent cells (diffusers' panorama window)."""
    return make_components(tmp_path_factory.mktemp("tiny64"), sample_size=64)


@pytest.fixture(scope="session")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Tiny SD components with a native window of 16 latent cells (128 px): fast pipeline tests."""
    return make_components(tmp_path_factory.mktemp("tiny16"), sample_size=16, seed=1)


@pytest.fixture(scope="session")
def small_folder(small: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small components saved with ``save_pretrained``: a model folder for the CLI and loaders."""
    return save_model_folder(small, tmp_path_factory.mktemp("model") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_pipe(tiny: dict[str, Any]):
    from multidiffusion.pipeline import MultiDiffusionPipeline

    return MultiDiffusionPipeline(loaded(tiny))


@pytest.fixture(scope="session")
def small_pipe(small: dict[str, Any]):
    from multidiffusion.pipeline import MultiDiffusionPipeline

    return MultiDiffusionPipeline(loaded(small))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is fastest, and it avoids OpenMP spin-waiting on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: Any) -> Any:
    """One plain line, last, when the web UI's browser tests were skipped, and how to get them (they are easy to
    miss among the ``-ra`` summary's other skips)."""
    result = yield
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "test_browser.py" in r.nodeid]
    if skipped:
        terminalreporter.write_line(
            f"note: {len(skipped)} browser test(s) of the web UI skipped: they need chromium on PATH "
            "(Debian: apt-get install chromium) and pip install -e '.[test,ui]'",
            yellow=True,
        )
    return result

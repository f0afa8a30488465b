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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full",
        action="store_true",
        help="run the full suite (what CI runs): the default run is the fast tier, which leaves out the tests "
        "marked heavy",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The fast tier: without ``--full``, tests marked ``heavy`` are deselected (each is covered in the fast tier by
    a cheaper test of the same module; CI runs them all)."""
    if config.getoption("--full") or config.getoption("-m") not in ("", "not slow"):
        return  # --full, or an explicit marker expression (``-m float_sensitive``) chooses for itself
    heavy = [item for item in items if item.get_closest_marker("heavy") is not None]
    if heavy:
        config.hook.pytest_deselected(items=heavy)
        items[:] = [item for item in items if item.get_closest_marker("heavy") is None]
        config.stash[_HEAVY_LEFT_OUT] = len(heavy)


_HEAVY_LEFT_OUT = pytest.StashKey[int]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: Any) -> Any:
    """One plain line, last, when the web UI's browser tests were skipped, and how to get them (they are easy to
    miss among the ``-ra`` summary's other skips)."""
    result = yield
    left_out = terminalreporter.config.stash.get(_HEAVY_LEFT_OUT, 0)
    if left_out:
        terminalreporter.write_line(
            f"note: the fast tier left out {left_out} heavy test(s); the full suite, as CI runs it: "
            "HF_HUB_OFFLINE=1 python -m pytest --full"
        )
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "test_browser.py" in r.nodeid]
    if skipped:
        terminalreporter.write_line(
            f"note: {len(skipped)} browser test(s) of the web UI skipped: they need chromium on PATH "
            "(Debian: apt-get install chromium)",
            yellow=True,
        )
    return result

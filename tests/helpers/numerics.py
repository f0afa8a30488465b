"""One float comparison for the whole suite: an error bound relative to the magnitude of the expected values.

Results computed along different kernel paths (fuse-then-step vs step-then-average, ours vs diffusers, tiled vs full
VAE, one view batch size vs another) differ by float rounding, and which rounding depends on the CPU: MKL, oneDNN and
ATen's own vectorised kernels take AVX2 or AVX-512 paths with different summation orders. float32 rounds at a
relative 2⁻²⁴ ≈ 6e-8 of a value's magnitude, so a fixed ``atol=1e-5`` is 0.8 ulp on values near 18 and passes on one
CPU and fails on another. :func:`assert_close_scaled` instead bounds ``max|actual − expected|`` by
``rel × max|expected|``; each caller picks ``rel`` from the magnitude and the number of accumulated operations, with a
margin of at least 10× over the worst relative error measured on AVX2 and AVX-512 kernel paths (`.ci/run` runs the
``float_sensitive`` tests under both).

Set ``MULTIDIFFUSION_NUMERICS_LOG=<file>`` to append, for every comparison, the test id, ``what``, the observed
relative error, the allowed one, max|actual − expected| and the scale (tab-separated): the measurement behind
each tolerance.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

FLOAT32_EPS = float(torch.finfo(torch.float32).eps)  # 1.19e-7: one ulp at magnitude 1


def _as_double(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double()
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def max_relative_error(actual: Any, expected: Any, *, scale: float | None = None) -> tuple[float, float, float]:
    """``(max|actual − expected|, scale, their ratio)``; ``scale`` defaults to ``max|expected|``."""
    a, e = _as_double(actual), _as_double(expected)
    if a.shape != e.shape:
        raise AssertionError(f"shapes differ: actual {tuple(a.shape)}, expected {tuple(e.shape)}")
    diff = float((a - e).abs().max()) if a.numel() else 0.0
    if scale is None:
        scale = float(e.abs().max()) if e.numel() else 0.0
    ratio = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
    return diff, scale, ratio


def _log(what: str, diff: float, scale: float, ratio: float, rel: float) -> None:
    path = os.environ.get("MULTIDIFFUSION_NUMERICS_LOG")
    if path:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{test}\t{what}\t{ratio:.3e}\t{rel:.1e}\t{diff:.3e}\t{scale:.3e}\n")


def assert_close_scaled(actual: Any, expected: Any, *, rel: float, what: str, scale: float | None = None) -> None:
    """Assert ``max|actual − expected| ≤ rel × scale``, ``scale = max|expected|`` unless given.

    ``actual`` and ``expected`` are tensors or arrays of one shape (any float dtype; compared in float64). Pass
    ``scale`` when the natural magnitude is not ``max|expected|``, e.g. the inputs' magnitude when the expected values
    are a small difference of large ones. NaN anywhere fails. The message names ``what`` and gives the absolute and
    relative errors, so a failure on a new CPU says by how much the bound was missed.
    """
    diff, scale, ratio = max_relative_error(actual, expected, scale=scale)
    _log(what, diff, scale, ratio, rel)
    if not diff <= rel * scale:  # written so that a NaN difference fails
        raise AssertionError(
            f"{what}: max|actual − expected| = {diff:.3e} exceeds rel {rel:.1e} × scale {scale:.3e} = "
            f"{rel * scale:.3e} (observed relative error {ratio:.2e})"
        )

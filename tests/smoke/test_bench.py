"""The benchmark scripts run (one step, one small size) and write their tables; no timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT


def run_script(*argv: str) -> None:
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.heavy
def test_cpu_benchmark_smoke(tmp_path):
    run_script(str(ROOT / "bench" / "panorama_cpu.py"), "--smoke", "--threads", "1", "--out-dir", str(tmp_path))
    rows = json.loads((tmp_path / "performance.json").read_text())["rows"]
    sizes = [r for r in rows if r["table"] == "sizes"]
    assert [r["method"].split(",")[0] for r in sizes] == ["multidiffusion (ours)", "diffusers", "diffusers"]
    settings = [r for r in rows if r["table"] == "settings"]
    assert {"ours: channels-last", "ours: bfloat16", "ours: view batch 1 (views not batched)"} <= {
        r["method"] for r in settings
    }
    for r in sizes + settings:
        # bfloat16 agrees to its own rounding; everything else to float32 rounding
        assert r["max_abs_diff_vs_ours"] <= (0.05 if "bfloat16" in r["method"] else 1e-4), r
    assert len({r["unet_rows"] for r in sizes + settings}) == 1  # same model evaluations, batched differently
    overheads = [r for r in rows if r["table"] == "overheads"]
    assert len(overheads) == 3 and all(r["ms"] > 0 for r in overheads)
    text = (tmp_path / "performance.md").read_text()
    assert "| size (px) |" in text and "## Speed settings on/off" in text and "torch.compile" in text


@pytest.mark.heavy
def test_gpu_benchmark_code_path_on_the_cpu(tmp_path):
    """``--tiny`` runs the GPU benchmark's code on the CPU with a tiny UNet config and a small canvas."""
    run_script(str(ROOT / "bench" / "panorama_gpu.py"), "--tiny", "--out-dir", str(tmp_path))
    rows = json.loads((tmp_path / "performance_gpu.json").read_text())["rows"]
    methods = [r["method"] for r in rows]
    assert methods[0] == "multidiffusion (ours)" and methods[1] == "diffusers, view batch 1 (default)"
    assert any(m.startswith("diffusers, best view batch") for m in methods)
    assert all(r["max_abs_diff_vs_ours"] <= 1e-3 for r in rows), rows
    assert len({r["unet_rows"] for r in rows}) == 1
    assert all(r["flop_floor_fraction"] > 0 for r in rows)
    assert "| method |" in (tmp_path / "performance_gpu.md").read_text()


@pytest.mark.heavy
def test_control_cost_smoke(tmp_path):
    """The control cost table (FLOPs on the meta device) for a tiny UNet: the UNet's row and both control networks."""
    run_script(str(ROOT / "bench" / "control_cost.py"), "--smoke", "--out-dir", str(tmp_path))
    text = (tmp_path / "control_cost.md").read_text()
    assert "| UNet | " in text and "| ControlNet | " in text and "| T2I-Adapter | " in text


@pytest.mark.heavy
def test_distributed_benchmark_smoke(tmp_path):
    """1 and 2 gloo processes, one step each: the table has a row per world size and the 2-process all-reduce time."""
    run_script(str(ROOT / "bench" / "distributed_cpu.py"), "--smoke", "--out-dir", str(tmp_path))
    rows = json.loads((tmp_path / "distributed_cpu.json").read_text())["rows"]
    assert [r["processes"] for r in rows] == [1, 2]
    assert rows[1]["allreduce_8MB_ms"] > 0 and all(r["s_per_step"] > 0 for r in rows)


@pytest.mark.heavy
def test_quality_figures_smoke(tmp_path):
    """Both oracles, two layouts, 8 samples: the table has every column and the harder field's prior correlation."""
    run_script(str(ROOT / "scripts" / "quality_figures.py"), "--smoke", "--out-dir", str(tmp_path))
    results = json.loads((tmp_path / "quality_figures.json").read_text())
    assert len(results) == 2 and all(len(rows) == 2 for rows in results.values())
    harder = next(rows for name, rows in results.items() if name.startswith("harder"))
    assert all(row["prior_1w"] > 0.3 and 0 < row["variance"] <= 1.2 for row in harder.values())
    assert "corr @ 1 window (prior)" in (tmp_path / "quality_figures.md").read_text()


@pytest.mark.heavy
def test_fusion_figures_smoke(tmp_path):
    """One oracle, six rows, 8 samples: x̂₀ fusion matches the default, per-view noise averaging loses variance."""
    run_script(str(ROOT / "scripts" / "fusion_figures.py"), "--smoke", "--out-dir", str(tmp_path))
    payload = json.loads((tmp_path / "fusion_figures.json").read_text())
    (rows,) = payload["results"].values()
    (delta,) = payload["max_abs_difference_over_sigma"].values()
    assert len(rows) == 6 and delta["x̂₀ fusion (SyncTweedies)"] < 1e-4
    assert (
        rows["ddpm: per-view stepping (paper's code)"]["variance"]
        < 0.5 * rows["ddpm: default (canvas noise)"]["variance"]
    )
    assert "max abs Δ vs default / σ" in (tmp_path / "fusion_figures.md").read_text()

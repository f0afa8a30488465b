"""One canvas on 1, 2 and 3 CPU processes (torchrun, gloo): time per step and the cost of the one all-reduce.

Each process runs one intra-op thread, so N processes use N cores: on a machine with fewer cores than processes the
extra ones only share (the table says how many cores there are). Measured per world size, after a warm-up run:
seconds per scheduler step of a 512 × 2048 px panorama on a small random SD model (64-px-wide UNet blocks, 512-px
views at stride 64: 25 views, classifier-free guidance), and the median time of an all-reduce of 1 MB and of 8 MB
(the SDXL 2048 × 16384 canvas latent in float32) over gloo. Writes docs/distributed_cpu.md and .json (--out-dir).

    python bench/distributed_cpu.py           # the published table (a few minutes on 2 idle cores)
    python bench/distributed_cpu.py --smoke   # one step, small sizes: what CI runs
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.helpers
sys.path.insert(0, str(ROOT / "bench"))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker(args: argparse.Namespace) -> None:
    """One rank: time the panorama's steps and the all-reduces; rank 0 appends a JSON row to ``args.rows``."""
    import torch.distributed as dist

    from multidiffusion import ViewSettings
    from multidiffusion.pipeline import MultiDiffusionPipeline

    torch.set_num_threads(1)
    pipe = MultiDiffusionPipeline.from_pretrained(args.model, device="cpu")
    size = dict(height=128, width=256) if args.smoke else dict(height=512, width=2048)
    steps = 1 if args.smoke else 4

    def run() -> None:
        pipe("a lake", **size, num_inference_steps=steps, output_type="latent", progress=False,
             generator=torch.Generator().manual_seed(0), views=ViewSettings(stride=64))  # fmt: skip

    run()  # warm-up (and joins the group)
    start = time.perf_counter()
    run()
    per_step = (time.perf_counter() - start) / steps
    world = dist.get_world_size() if dist.is_initialized() else 1
    reduce_ms = {}
    for megabytes in (1, 8):
        tensor = torch.zeros(megabytes * 2**20 // 4)
        times = []
        for _ in range(3 if args.smoke else 20):
            start = time.perf_counter()
            if world > 1:
                dist.all_reduce(tensor)
            times.append(time.perf_counter() - start)
        reduce_ms[megabytes] = 1000 * statistics.median(times) if world > 1 else 0.0
    if int(os.environ.get("RANK", "0")) == 0:
        row = {
            "processes": world,
            "s_per_step": per_step,
            "allreduce_1MB_ms": reduce_ms[1],
            "allreduce_8MB_ms": reduce_ms[8],
        }
        with open(args.rows, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--rows", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    from tests.helpers.tiny_models import make_components, save_model_folder

    with tempfile.TemporaryDirectory() as tmp:
        components = make_components(Path(tmp), sample_size=16 if args.smoke else 64)
        if not args.smoke:  # wider blocks than the suite's: enough compute per view for the split to matter
            from diffusers import UNet2DConditionModel

            unet = UNet2DConditionModel.from_config({**components["unet"].config, "block_out_channels": (64, 128)})
            components["unet"] = unet.eval()
        model = save_model_folder(components, Path(tmp) / "model")
        rows = Path(tmp) / "rows.jsonl"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
        for world in (1, 2) if args.smoke else (1, 2, 3):
            for attempt in (1, 2):  # a launch can lose its free port to another process: one retry, said aloud
                command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={world}"]
                command += [f"--master-port={_port()}", "--master-addr=127.0.0.1", __file__, "--worker"]
                command += ["--model", str(model), "--rows", str(rows)] + (["--smoke"] if args.smoke else [])
                proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
                if proc.returncode == 0:
                    break
                print(
                    f"torchrun with {world} processes failed (attempt {attempt}):\n{proc.stderr[-4000:]}",
                    file=sys.stderr,
                )
            else:
                raise SystemExit(f"torchrun with {world} processes failed twice")
        table = [json.loads(line) for line in rows.read_text().splitlines()]
    base = table[0]["s_per_step"]
    lines = [
        "# One canvas on several CPU processes (gloo)",
        "",
        f"Written by `python bench/distributed_cpu.py` on {os.cpu_count()} cores, one thread per process; "
        "see docs/distributed.md for the scaling model these figures feed.",
        "",
        "| processes | s per step | speed-up | all-reduce 1 MB (ms) | all-reduce 8 MB (ms) |",
        "|---|---|---|---|---|",
    ]
    for row in table:
        lines.append(
            f"| {row['processes']} | {row['s_per_step']:.3f} | {base / row['s_per_step']:.2f}× | "
            f"{row['allreduce_1MB_ms']:.2f} | {row['allreduce_8MB_ms']:.2f} |"
        )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "distributed_cpu.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (args.out_dir / "distributed_cpu.json").write_text(json.dumps({"rows": table}, indent=1) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

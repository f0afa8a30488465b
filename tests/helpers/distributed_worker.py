"""Run under ``torchrun`` by tests/pipeline/run/test_distributed.py: the same calls as a single process, on several.

Usage: ``torchrun --nproc-per-node N tests/helpers/distributed_worker.py MODEL_FOLDER OUT_DIR [--fail-rank R]``. Every
rank makes a panorama, a region layout, a synchronised panorama, an outpainting and an upscale with noise inversion with
the tiny SD model; rank 0 saves each run's
latents as ``OUT_DIR/<run>.pt``. With ``--fail-rank R`` rank R's denoiser raises at its third call instead.

``torchrun … tests/helpers/distributed_worker.py --cli STEP_DIR FLOOR ARGS…`` runs the command line's ``main(ARGS)``
instead, as ``torchrun -m multidiffusion ARGS…`` does, with the step-timeout floor set to FLOOR seconds (``default``:
the library's); each rank writes ``STEP_DIR/rank<R>``: its process id, then one line per finished all-reduce (one
per step), so a test knows when both ranks are running steps (tests/pipeline/run/test_distributed_stall.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: tests.helpers

RUNS = ("panorama", "regions", "sync", "outpaint", "upscale")


def runs(pipe: Any) -> dict[str, Any]:
    """The calls the test compares, each a function of nothing (one seed each); the test runs them alone too."""
    from multidiffusion.core.features.regions import Region

    common = dict(num_inference_steps=3, output_type="latent", progress=False, view_batch_size=2)
    picture = torch.linspace(0, 1, 3 * 128 * 128).reshape(3, 128, 128)  # a smooth stand-in photo in [0, 1]
    return {
        "panorama": lambda: pipe(
            "a mountain lake", height=128, width=384, generator=torch.Generator().manual_seed(1), **common
        ),
        "regions": lambda: pipe.regions(
            [Region("a red barn", box=(0, 0, 128, 128)), Region("a blue lake", box=(256, 0, 384, 128))],
            background="a meadow",
            height=128,
            width=384,
            generator=torch.Generator().manual_seed(2),
            **common,
        ),
        "sync": lambda: pipe(
            "a mountain lake",
            height=128,
            width=384,
            sync=True,
            sync_loss="builtin",
            generator=torch.Generator().manual_seed(3),
            **common,
        ),
        "outpaint": lambda: pipe.outpaint(
            picture, "a mountain lake", left=128, right=128, generator=torch.Generator().manual_seed(4), **common
        ),
        "upscale": lambda: pipe.upscale(
            picture,
            2,
            "a mountain lake",
            strength=0.6,
            noise_inversion_steps=2,
            generator=torch.Generator().manual_seed(5),
            **common,
        ),
    }


def cli(step_dir: Path, floor: str, argv: list[str]) -> int:
    """The command line's exit status for ``argv``, its ranks' steps marked in ``step_dir`` (see the module
    docstring)."""
    import dataclasses

    from multidiffusion.interfaces.cli.main import main as cli_main
    from multidiffusion.pipeline.run import distributed, generate

    if floor != "default":
        distributed.STEP_TIMEOUT_FLOOR = float(floor)
    rank = int(os.environ.get("RANK", "0"))
    marks = step_dir / f"rank{rank}"
    marks.write_text(f"{os.getpid()}\n")
    made = generate.process_shard

    def marked_shard(device: torch.device) -> Any:
        shard = made(device)
        if shard.all_sum is None:
            return shard
        inner = shard.all_sum

        def all_sum(tensor: torch.Tensor) -> None:
            inner(tensor)
            with marks.open("a") as f:
                f.write("step\n")

        return dataclasses.replace(shard, all_sum=all_sum)

    generate.process_shard = marked_shard
    return cli_main(argv)


def main() -> None:
    if len(sys.argv) > 3 and sys.argv[1] == "--cli":
        raise SystemExit(cli(Path(sys.argv[2]), sys.argv[3], sys.argv[4:]))
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("out")
    parser.add_argument("--fail-rank", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from multidiffusion.pipeline import MultiDiffusionPipeline

    pipe = MultiDiffusionPipeline.from_pretrained(args.model, device="cpu")
    rank = int(os.environ.get("RANK", "0"))
    if args.fail_rank == rank:
        inner, calls = pipe.model.denoiser, []

        def failing(*a: Any, **k: Any) -> Any:
            calls.append(1)
            if len(calls) >= 3:
                raise RuntimeError(f"injected failure on rank {rank}")
            return inner(*a, **k)

        pipe.model.denoiser = failing
    for name, run in runs(pipe).items():
        latents = run().latents
        if rank == 0:
            torch.save(latents, Path(args.out) / f"{name}.pt")


if __name__ == "__main__":
    main()

"""Peak memory of full vs tiled VAE decode as the canvas grows (random VAEs, CPU, float32).

Each (VAE, canvas, mode) runs in a fresh subprocess, which measures:

* RSS: the process's peak resident memory (``getrusage`` maxrss) during the decode, minus the peak before
  it (VAE built, latents made, both paths warmed up on a small canvas). Everything the process touched
  counts: with tiles computed on the CPU the parked canvases live in the same memory.
* live: the peak bytes of live tensors allocated during a second decode of the same latents
  (``torch.profiler`` memory events, "Total Allocated"), i.e. without allocator caching or the
  interpreter's own memory.
* tile: for tiled decodes, the peak extra live bytes inside one tile's ``record_function`` range (read the
  window, run the segment, merge statistics) above the bytes live when the range began: what the compute
  device holds for a tile when the whole canvases are parked elsewhere (on the host when decoding on a GPU).
* time: wall time of the first (unprofiled) decode, for the tiled path's overhead; one run, a busy
  machine moves it.
* diff: max |tiled − full| of the two decodes (a check that the tiled path still matches).

Writes the table between the markers in docs/tiled_vae.md (or a fresh tiled_vae.md in --out-dir):

    python bench/tiled_vae_memory.py            # the published table (a few minutes on 2 cores)
    python bench/tiled_vae_memory.py --smoke    # one tiny canvas (seconds): what CI runs
"""

from __future__ import annotations

import argparse
import bisect
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- memory-table:begin -->", "<!-- memory-table:end -->"
MIB = 2**20

# The test suite's tiny VAE (tests/helpers/tiny_models.py) and one with Stable Diffusion's VAE architecture.
VAES = {
    "tiny": {"block_out_channels": (8, 8, 8, 8), "layers_per_block": 1, "norm_num_groups": 4},
    "sd": {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "norm_num_groups": 32},
}
# (VAE, height px, width px, tile px)
FULL_RUN = [
    ("tiny", 512, 512, 512),
    ("tiny", 1024, 1024, 512),
    ("tiny", 1024, 2048, 512),
    ("tiny", 2048, 2048, 512),
    ("tiny", 2048, 2048, 256),
    ("sd", 128, 128, 64),
    ("sd", 256, 256, 64),
]
SMOKE_RUN = [("tiny", 64, 96, 32)]


def make_vae(name: str) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    n = len(VAES[name]["block_out_channels"])
    torch.manual_seed(0)  # benchmark process: reproducible random weights
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        latent_channels=4,
        **VAES[name],
    )
    return vae.eval()


def maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def profiled_peaks(fn) -> tuple[int, int]:
    """(peak live bytes allocated during fn, peak extra bytes inside one tile range) from the profiler."""
    from torch.profiler import ProfilerActivity, profile

    from multidiffusion.adapters.codecs.tiled_vae import TILE_RANGE

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text())["traceEvents"]
    memory = sorted(
        (e["ts"], e["args"]["Total Allocated"])
        for e in events
        if e.get("name") == "[memory]" and e["args"].get("Device Type") == 0
    )
    times = [ts for ts, _ in memory]
    peak = max((total for _, total in memory), default=0)
    tile = 0
    for r in (e for e in events if e.get("name") == TILE_RANGE and e.get("ph") == "X"):
        first, stop = bisect.bisect_left(times, r["ts"]), bisect.bisect_right(times, r["ts"] + r["dur"])
        if stop > first:
            before = memory[first - 1][1] if first else 0
            tile = max(tile, max(total for _, total in memory[first:stop]) - before)
    return peak, tile


def worker(vae_name: str, height: int, width: int, tile_px: int, mode: str) -> dict:
    """One configuration, measured in this (fresh) process."""
    from multidiffusion.adapters.codecs.tiled_vae import tiled_decode

    torch.set_num_threads(1)
    vae = make_vae(vae_name)
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    tile = tile_px // f
    z = torch.randn(1, 4, height // f, width // f, generator=torch.Generator().manual_seed(0))

    def full() -> torch.Tensor:
        with torch.no_grad():
            return vae.decode(z).sample

    def tiled() -> torch.Tensor:
        return tiled_decode(vae, z, tile)

    run = full if mode == "full" else tiled
    small = z[..., : min(z.shape[-2], 4), : min(z.shape[-1], 4)]
    with torch.no_grad():
        vae.decode(small)
    tiled_decode(vae, small, 2)
    baseline = maxrss_bytes()
    start = time.perf_counter()
    out = run()
    seconds = time.perf_counter() - start
    rss = maxrss_bytes() - baseline
    del out
    live, tile_bytes = profiled_peaks(run)
    row = {"vae": vae_name, "height": height, "width": width, "tile_px": tile_px, "mode": mode}
    row |= {
        "seconds": seconds,
        "rss_mib": rss / MIB,
        "live_mib": live / MIB,
        "tile_mib": tile_bytes / MIB if mode == "tiled" else None,
    }
    if mode == "tiled":
        row["max_abs_diff"] = float((tiled() - full()).abs().max())
    return row


def measure(config: tuple[str, int, int, int], mode: str) -> dict:
    vae_name, height, width, tile_px = config
    cmd = [sys.executable, __file__, "--worker", vae_name, str(height), str(width), str(tile_px), mode]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {cmd[3:]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict], command: str) -> str:
    lines = [
        f"Regenerate with `{command}` (CPU, one thread, torch {torch.__version__}, float32, batch 1).",
        "",
        "| VAE | canvas (px) | tile (px) | full: RSS (MiB) | tiled: RSS (MiB) | full: live (MiB) "
        "| tiled: live (MiB) | tiled: one tile (MiB) | full: time (s) | tiled: time (s) | max abs diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_key: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        by_key.setdefault((r["vae"], r["height"], r["width"], r["tile_px"]), {})[r["mode"]] = r
    for (vae, h, w, tile), pair in by_key.items():
        full, tiled = pair["full"], pair["tiled"]
        lines.append(
            f"| {vae} | {h}×{w} | {tile} | {full['rss_mib']:.1f} | {tiled['rss_mib']:.1f} "
            f"| {full['live_mib']:.1f} | {tiled['live_mib']:.1f} | {tiled['tile_mib']:.1f} "
            f"| {full['seconds']:.2f} | {tiled['seconds']:.2f} | {tiled['max_abs_diff']:.1e} |"
        )
    return "\n".join(lines)


def write(text: str, path: Path) -> None:
    """Replace the text between the markers in ``path`` (a fresh file with just the table if absent)."""
    block = f"{BEGIN}\n{text}\n{END}"
    if path.exists():
        doc = path.read_text()
        if BEGIN in doc and END in doc:
            doc = doc[: doc.index(BEGIN)] + block + doc[doc.index(END) + len(END) :]
        else:
            doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    else:
        doc = "# Tiled VAE memory\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one tiny canvas, seconds (CI)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs", help="folder of tiled_vae.md")
    parser.add_argument("--worker", nargs=5, metavar=("VAE", "H", "W", "TILE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        vae_name, h, w, tile, mode = args.worker
        print(json.dumps(worker(vae_name, int(h), int(w), int(tile), mode)))
        return
    rows = []
    for config in SMOKE_RUN if args.smoke else FULL_RUN:
        for mode in ("full", "tiled"):
            rows.append(measure(config, mode))
            print(json.dumps(rows[-1]), flush=True)
    command = "python bench/tiled_vae_memory.py" + (" --smoke" if args.smoke else "")
    write(table(rows, command), args.out_dir / "tiled_vae.md")
    print(f"wrote {args.out_dir / 'tiled_vae.md'}")


if __name__ == "__main__":
    main()

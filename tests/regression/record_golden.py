"""Record the regression gate's golden outputs: ``python tests/regression/record_golden.py``.

Why: issue 25 moves source files around; the gate (``test_golden_outputs.py``, ``test_old_pngs_reproduce.py``) checks
that every output recorded here, before the move, stays bit-identical after it. Run this once on the code before the
redesign and commit what it writes; do NOT rerun it to make a failing gate pass after the move (that would record the
regression as the new truth).

Writes, under ``tests/regression/data/``:

- ``golden.safetensors``: one float32 tensor per case of ``golden_cases.CASES``;
- ``pngs/*.png``: reference PNGs made by the command line on the toy model (``golden_cases.PNGS``);
- ``golden.json``: for every case and PNG its description and the CPU capability and torch version it was made
  with (the test demands bit-identity only on that same kernel path), plus the library versions for diagnosis.

Options: ``--only NAME …`` re-records some cases (and PNGs by file name) and keeps the others.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# As tests/conftest.py sets them: never the hub, no progress bars, no transformers notices, a private hash cache.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ["MULTIDIFFUSION_CACHE_DIR"] = tempfile.mkdtemp(prefix="multidiffusion-cache-")

ROOT = Path(__file__).resolve().parents[2]  # the repository: tests.helpers and tests.regression
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import tests.regression.golden_cases as g  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="re-record these cases / PNGs only")
    args = parser.parse_args(argv)
    only = set(args.only or [])
    unknown = only - set(g.CASES) - set(g.PNGS)
    if unknown:
        parser.error(f"unknown cases: {sorted(unknown)}")

    g.DATA.mkdir(parents=True, exist_ok=True)
    g.PNG_DIR.mkdir(parents=True, exist_ok=True)
    keep = bool(only) and g.GOLDEN_JSON.exists()
    record = json.loads(g.GOLDEN_JSON.read_text()) if keep else {}
    tensors = load_file(str(g.GOLDEN_TENSORS)) if keep and g.GOLDEN_TENSORS.exists() else {}
    env = g.environment()
    record["about"] = (
        "Golden outputs of the regression gate for issue 25 (module moves must not change outputs); written by "
        "tests/regression/record_golden.py, checked by tests/regression/test_golden_outputs.py and "
        "test_old_pngs_reproduce.py."
    )
    record["environment"] = env
    cases, pngs = record.setdefault("cases", {}), record.setdefault("pngs", {})

    for name in g.CASES:
        if only and name not in only:
            continue
        start = time.perf_counter()
        out = g.compute(name)
        if not bool(torch.isfinite(out).all()):
            raise SystemExit(f"{name}: non-finite output; nothing written")
        tensors[name] = out
        cases[name] = {"description": g.describe(name), "shape": list(out.shape), **env}
        print(f"{name:24s} {tuple(out.shape)!s:20s} {time.perf_counter() - start:5.1f} s", flush=True)

    for name, (description, _) in g.PNGS.items():
        if only and name not in only:
            continue
        out = g.PNG_DIR / name
        with tempfile.TemporaryDirectory() as tmp:
            argv_used = g.png_argv(name, Path(tmp) / name)  # a layout file, where needed, lives in tmp
            status = g.cli(argv_used)
            if status != 0:
                raise SystemExit(f"{name}: the command line exited with {status}")
            (Path(tmp) / name).replace(out)
        pngs[name] = {"description": description, "argv": list(g.PNGS[name][1]), **env}
        print(f"{name:24s} {out.stat().st_size} bytes", flush=True)

    record["cases"] = {k: cases[k] for k in g.CASES if k in cases}  # in CASES order; dropped cases go
    record["pngs"] = {k: pngs[k] for k in g.PNGS if k in pngs}
    tensors = {k: tensors[k] for k in record["cases"]}
    save_file(tensors, str(g.GOLDEN_TENSORS), metadata={"about": "tests/regression golden outputs (issue 25)"})
    g.GOLDEN_TENSORS.chmod(0o644)  # safetensors writes 0600
    g.GOLDEN_JSON.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {g.GOLDEN_TENSORS} ({g.GOLDEN_TENSORS.stat().st_size} bytes) and {g.GOLDEN_JSON}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

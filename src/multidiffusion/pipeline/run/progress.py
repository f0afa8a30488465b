"""The one progress display of a run: denoising with an ETA that knows which steps cost more, then decoding.

Steps are not all alike: a SyncDiffusion step adds a gradient through the denoiser and decoder for every
view, several times a plain step's cost. tqdm's ETA assumes a constant rate, so early in a synchronised
run it would promise far too much and later far too little. Here the remaining time is the sum over the
remaining steps of the mean measured time of steps of the same kind; a kind not yet seen is estimated from
the other with :data:`HEAVY_STEP_RATIO`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tqdm.auto import tqdm

# A synchronised step costs about this many plain steps before any has been measured (docs/sync.md: a run
# that synchronises every step takes 7× a plain one on tiny SD; 3–10× on the toy and real models).
HEAVY_STEP_RATIO = 7.0


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class StepProgress:
    """A progress bar over the scheduler's steps with a per-kind ETA.

    Args:
        total: Steps in the run.
        heavy: ``heavy(i)`` is True for the steps (by index) that cost more (synchronised steps); None: all
            steps cost alike.
        enabled: False shows nothing (the measurements still run, for tests).
        clock: Seconds since an arbitrary origin (``time.perf_counter``; injectable for tests).
        desc: What the bar counts (``denoising``; ``inverting`` for noise inversion).
    """

    def __init__(
        self,
        total: int,
        heavy: Callable[[int], bool] | None = None,
        *,
        enabled: bool = True,
        clock: Callable[[], float] = time.perf_counter,
        desc: str = "denoising",
    ) -> None:
        self.total = total
        self.kinds = [bool(heavy(i)) if heavy is not None else False for i in range(total)]
        self.clock = clock
        self.times: dict[bool, list[float]] = {False: [], True: []}
        self.done = 0
        self.last = clock()
        self.bar = tqdm(
            total=total,
            disable=not enabled,
            desc=desc,
            unit="step",
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
        )
        self.bar.set_postfix_str(self._eta_text(), refresh=False)

    def eta(self) -> float | None:
        """Seconds left, or None before any step has been timed."""
        plain, heavy = self.times[False], self.times[True]
        if not plain and not heavy:
            return None
        mean_plain = sum(plain) / len(plain) if plain else (sum(heavy) / len(heavy)) / HEAVY_STEP_RATIO
        mean_heavy = sum(heavy) / len(heavy) if heavy else mean_plain * HEAVY_STEP_RATIO
        return sum(mean_heavy if k else mean_plain for k in self.kinds[self.done :])

    def _eta_text(self) -> str:
        eta = self.eta()
        return "ETA ?" if eta is None else f"ETA {_clock(eta)}"

    def step(self, step_index: int) -> None:
        """Record that step ``step_index`` has finished."""
        now = self.clock()
        kind = self.kinds[step_index] if step_index < len(self.kinds) else False
        self.times[kind].append(now - self.last)
        self.last = now
        self.done = min(step_index + 1, self.total)
        self.bar.set_postfix_str(self._eta_text(), refresh=False)
        self.bar.update(self.done - self.bar.n)

    def close(self) -> None:
        self.bar.close()


class Phase:
    """A one-unit bar for a phase without steps of its own (decoding): shows its name, then its duration."""

    def __init__(self, name: str, enabled: bool = True) -> None:
        self.bar = tqdm(total=1, disable=not enabled, desc=name, bar_format="{desc}: {elapsed}")

    def __enter__(self) -> Phase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.update(1)
        self.bar.close()

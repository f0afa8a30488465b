"""The one sampling loop of MultiDiffusion (paper Algorithm 1, docs/design.md §3): fuse, then step once.

Per timestep t:
  1. crop every task's view out of the canvas x_t (a hook may change the crop),
  2. denoise the crops in batches, fuse the outputs with the weights (Eq. 5) into O, and the crops into X
     (X = x_t exactly when no hook is installed),
  3. take ONE scheduler step on the whole canvas: x_{t−1} = scheduler.step(O, t, X).

For schedulers whose update is linear in (x_t, model output) given their state (DDIM η = 0, Euler, Heun,
DPM-Solver++, UniPC, PNDM) this equals stepping every view and averaging (the paper's Eq. 5 applied to the
per-view x_{t−1}); multistep state lives once for the canvas and stochastic schedulers draw their noise
once for the canvas.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch
from torch import Tensor

from multidiffusion.core.engine.fusion import FusionPlan
from multidiffusion.core.engine.shards import Shard
from multidiffusion.core.engine.tasks import TaskSchedule
from multidiffusion.core.errors import InvalidInputError, NonFiniteError
from multidiffusion.core.features.global_view import GlobalStep, GlobalView
from multidiffusion.core.types import Denoiser, HookContext, PostStepHook, SamplerState, StepState, ViewHook, ViewTask

StepCallback = Callable[[StepState], "bool | None"]


def _step_kwargs(scheduler: Any, generator: torch.Generator | None) -> dict[str, Any]:
    """Pass the generator to schedulers that draw noise in ``step`` (DDPM, Euler ancestral, LCM)."""
    params = inspect.signature(scheduler.step).parameters
    return {"generator": generator} if "generator" in params else {}


def scale_model_input(scheduler: Any, x: Tensor, t: Tensor) -> Tensor:
    """The scheduler's input scaling (σ-preconditioning of Euler-type schedulers); flow-matching schedulers
    have none and feed x_t as it is."""
    scale = getattr(scheduler, "scale_model_input", None)
    return x if scale is None else scale(x, t)


def batches(count: int, size: int | None, start: int = 0) -> list[slice]:
    """Split ``range(start, count)`` into consecutive slices of at most ``size`` (None: one slice)."""
    if size is not None and (not isinstance(size, int) or size < 1):
        raise InvalidInputError(f"view batch size must be a positive integer, got {size!r}")
    size = max(count - start, 1) if size is None else size
    return [slice(i, min(i + size, count)) for i in range(start, count, size)]


class _Plans:
    """The fusion plan (and its view batches) of every step: one for a fixed task list, one per distinct layout
    of a :class:`TaskSchedule`. All are built before the first denoiser call, so a bad layout at any step
    raises before any work is done, and a layout that recurs costs nothing after its first step."""

    def __init__(
        self,
        tasks: Sequence[ViewTask] | TaskSchedule,
        shape: tuple[int, int, torch.device],
        num_steps: int,
        conditions: Sequence[Any],
        view_batch_size: int | None,
        shard: Shard,
    ) -> None:
        self.shape, self.conditions, self.view_batch_size = shape, conditions, view_batch_size
        self.num_conditions, self.shard = len(conditions), shard
        schedule = tasks if isinstance(tasks, TaskSchedule) else TaskSchedule.fixed(tasks)
        self.keys: list[Hashable] = [schedule.key(i) for i in range(num_steps)] or [schedule.key(0)]
        self.cache: dict[Hashable, tuple[FusionPlan, list[slice]]] = {}
        for key in self.keys:
            if key not in self.cache:
                self.cache[key] = self._build(schedule.build(key))

    def _build(self, tasks: Sequence[ViewTask]) -> tuple[FusionPlan, list[slice]]:
        plan = FusionPlan(tasks, *self.shape)
        for task in plan.tasks:
            if not 0 <= task.condition < self.num_conditions:
                raise InvalidInputError(
                    f"task condition {task.condition} out of range for {self.num_conditions} conditions; "
                    "a task's condition is an index into the conditions given"
                )
        return plan, self._local_batches(plan)

    def _local_batches(self, plan: FusionPlan) -> list[slice]:
        """This rank's tasks of ``plan`` in view batches (all of them for one process)."""
        start, stop = self.shard.span(self.costs(plan))
        return batches(stop, self.view_batch_size, start)

    def costs(self, plan: FusionPlan) -> list[float]:
        """Denoiser rows per task: 2 for a guided condition (its ``guided`` attribute), else 1."""
        return [2.0 if getattr(self.conditions[t.condition], "guided", False) else 1.0 for t in plan.tasks]

    def at(self, step_index: int) -> tuple[FusionPlan, list[slice]]:
        """(plan, view batches) of step ``step_index``."""
        return self.cache[self.keys[step_index]]

    def largest_batch(self, step_index: int) -> int:
        """The most tasks in one view batch of step ``step_index`` (0 when this rank has none)."""
        return max((g.stop - g.start for g in self.at(step_index)[1]), default=0)

    def rebatch(self, view_batch_size: int) -> None:
        """Split every plan's tasks into batches of at most ``view_batch_size`` from now on."""
        self.view_batch_size = view_batch_size
        for key, (plan, _) in self.cache.items():
            self.cache[key] = (plan, self._local_batches(plan))


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocator failure (CUDA's OutOfMemoryError, or a CPU allocation that failed)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _denoise_groups(
    denoiser: Denoiser,
    scheduler: Any,
    plan: FusionPlan,
    groups: Sequence[slice],
    x: Tensor,
    t: Tensor,
    step_index: int,
    conditions: Sequence[Any],
    hooks: Sequence[ViewHook],
    n: int,
) -> tuple[Tensor, Tensor | None, bool]:
    """One step's Σ W_i o_i (and Σ W_i x_i when hooks ran) over the view batches ``groups``, and whether any hook
    changed a crop."""
    model_sum = torch.zeros_like(x)
    crop_sum = torch.zeros_like(x) if hooks else None
    changed = False  # whether any hook returned new crops this step
    for group in groups:
        crops = plan.crop(x, group)
        if hooks:
            context = HookContext(
                step_index=step_index,
                timestep=t,
                tasks=plan.tasks[group],
                task_indices=range(len(plan))[group],
                num_canvases=n,
                scheduler=scheduler,
                canvas=x,
            )
            cropped = crops
            for hook in hooks:
                crops = hook(crops, context)
            changed = changed or crops is not cropped
            plan.accumulate(crop_sum, crops, group)
        model_in = scale_model_input(scheduler, crops, t)
        conds = [conditions[task.condition] for task in plan.tasks[group]]
        views = [task.view for task in plan.tasks[group]]
        plan.accumulate(model_sum, denoiser(model_in, t, conds, views=views), group)
    return model_sum, crop_sum, changed


def _denoise_step_backing_off(
    run: Callable[[list[slice]], tuple[Tensor, Tensor | None, bool]],
    plans: _Plans,
    step_index: int,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor | None, bool]:
    """``run(groups)`` for the step; when it runs out of memory, the view batch halves (for this and every later
    step) and the step is redone from its start, the generator rewound, so hooks draw the same numbers: the
    result changes only by float rounding, as for any view batch size."""
    state = generator.get_state() if generator is not None else None
    while True:
        try:
            return run(plans.at(step_index)[1])
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            size = plans.largest_batch(step_index)
            if size <= 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            plans.rebatch(size // 2)
            warnings.warn(
                f"out of memory with {size} views per model call; redoing step {step_index + 1} with {size // 2} "
                f"(pass view_batch_size={size // 2} / --view-batch-size {size // 2} to start there)",
                RuntimeWarning,
                stacklevel=3,
            )
            if generator is not None and state is not None:
                generator.set_state(state)


def _sum_over_ranks(
    shard: Shard, model_sum: Tensor, crop_sum: Tensor | None, changed: bool
) -> tuple[Tensor, Tensor | None, bool]:
    """Each rank's partial sums added over all ranks, in one collective (packed with the hook flag)."""
    parts = [model_sum.reshape(-1)]
    if crop_sum is not None:
        parts.append(crop_sum.reshape(-1))
    flag = torch.tensor([1.0 if changed else 0.0], device=model_sum.device)
    packed = shard.sum_(torch.cat([*parts, flag]))
    total = model_sum.numel()
    model_sum = packed[:total].reshape(model_sum.shape)
    if crop_sum is not None:
        crop_sum = packed[total : 2 * total].reshape(crop_sum.shape)
    return model_sum, crop_sum, bool(packed[-1] > 0)


def _global_step(
    cache: dict[int, GlobalStep], settings: GlobalView, plan: FusionPlan, height: int, width: int
) -> GlobalStep:
    """The :class:`GlobalStep` of ``plan`` (one per distinct layout; built once)."""
    glob = cache.get(id(plan))
    if glob is None:
        glob = cache[id(plan)] = GlobalStep(settings, height, width, plan.view_size, plan.denominator)
    return glob


def _passes(post_step: Sequence[PostStepHook], step_index: int, num_steps: int) -> int:
    """How many times step ``step_index`` is taken: 1, or a resampling hook's count (its ``passes`` method)."""
    counts = [h.passes(step_index, num_steps) for h in post_step if hasattr(h, "passes")]
    return max(counts, default=1)


def _jump_back(
    post_step: Sequence[PostStepHook], x: Tensor, step_index: int, scheduler: Any, generator: torch.Generator | None
) -> Tensor:
    """x_{t−1} → x_t by the first post-step hook with a ``jump_back`` method (the one that asked for passes)."""
    hook = next(h for h in post_step if hasattr(h, "jump_back"))
    return hook.jump_back(x, step_index, scheduler, generator).to(torch.float32)


def _fused_output(
    run: Callable[..., tuple[Tensor, Tensor | None, bool]],
    plans: _Plans,
    plan: FusionPlan,
    step_index: int,
    generator: torch.Generator | None,
    shard: Shard,
    x: Tensor,
) -> Tensor:
    """O of Eq. 5 for this step at another canvas ``x`` (same views, conditions and view hooks; no global view)."""
    model_sum, _, _ = _denoise_step_backing_off(functools.partial(run, x=x), plans, step_index, generator)
    if not shard.alone:
        model_sum, _, _ = _sum_over_ranks(shard, model_sum, None, False)
    return plan.normalise(model_sum)


def sample(
    denoiser: Denoiser,
    scheduler: Any,
    x_T: Tensor,
    tasks: Sequence[ViewTask] | TaskSchedule,
    conditions: Sequence[Any],
    *,
    hooks: Sequence[ViewHook] = (),
    callback: StepCallback | None = None,
    view_batch_size: int | None = None,
    generator: torch.Generator | None = None,
    start: SamplerState | None = None,
    post_step: Sequence[PostStepHook] = (),
    shard: Shard | None = None,
    global_view: GlobalView | None = None,
) -> Tensor:
    """Run the MultiDiffusion reverse process on a canvas.

    Args:
        denoiser: Called as ``denoiser(x, t, conds, views=views)`` on batches of crops (see
            :class:`~multidiffusion.core.types.Denoiser`); wrap it in
            :class:`~multidiffusion.core.engine.guidance.ClassifierFreeGuidance` for guidance.
        scheduler: A diffusers-style scheduler with ``set_timesteps`` already called: ``timesteps``,
            ``step(model_output, t, x, …).prev_sample`` and, where it has one, ``scale_model_input(x, t)``.
        x_T: Initial canvas (N, C, H, W) in latent cells, already scaled by ``init_noise_sigma``.
        tasks: The (view, condition, weight) pairs; every canvas cell needs positive total weight. Or a
            :class:`~multidiffusion.core.engine.tasks.TaskSchedule`: a layout that changes from step to step
            (shifted windows); each distinct layout gets one fusion plan, built the first time it is used.
        conditions: What ``ViewTask.condition`` indexes; handed to the denoiser unchanged.
        hooks: Per-view hooks, applied in order to each batch of crops before denoising. A hook with a
            ``begin_step(x, step_index, t, scheduler, shard)`` method has it called at the start of every step, on
            every rank (SyncDiffusion shares its anchor image there).
        callback: Called after each step with a :class:`StepState`; return True to stop early.
        view_batch_size: Tasks per denoiser call (None: all at once). Does not change the result
            beyond float rounding. When a call runs out of memory the batch halves and the step is redone
            (a warning says so), down to one task per call.
        generator: Passed to ``scheduler.step`` for schedulers that draw noise.
        start: Continue a run from a checkpoint: skip the first ``start.step_index`` steps and start from the
            canvas ``start.x`` instead of ``x_T`` (same shape); the caller restores the scheduler's and the
            generator's state. None: start at the first step from ``x_T``. Image-to-image runs start the same
            way: at the step their strength selects, from the encoded image noised to it.
        post_step: Hooks applied in order to the canvas after each scheduler step, before the finiteness check
            and the callback (known regions: :class:`~multidiffusion.core.features.known.KnownRegion`). A hook may
            also have ``condition_output(O, X, step_index, t, scheduler, redo)``, which replaces the fused output before
            the step (an x̂₀-space sampler: DDNM, the Tweedie-moment projection; ``redo(x)`` is this step's O at another
            canvas, for Jacobian–vector products), and ``passes(step_index, num_steps)`` with ``jump_back(x, step_index,
            scheduler, generator)``: the step is then taken that many times, each repeat from x_{t−1} noised back
            to t (RePaint's resampling; the scheduler's attributes are restored before each repeat, so only
            single-step schedulers can be resampled: :mod:`~multidiffusion.core.features.conditional`).
        shard: Several processes on one canvas (:class:`~multidiffusion.core.engine.shards.Shard`): this one denoises
        its     span of each step's tasks, and the partial sums of Eq. 5 are added over the ranks once per step before
            every rank takes the same scheduler step. None: one process. Every rank must start from the same
            ``x_T`` and generator state.
        global_view: One more view, of the whole canvas pooled to fit the window, fused by least squares in x̂₀
            space in the steps its ``until`` covers (:mod:`~multidiffusion.core.features.global_view`). None: crops
            only. Every rank computes it (one more model call per step).

    Returns:
        The final canvas x_0 (N, C, H, W), float32.

    Raises:
        NonFiniteError: When a step leaves inf or NaN anywhere in the canvas (named by its step).
    """
    if x_T.ndim != 4:
        raise InvalidInputError(f"x_T must be (N, C, H, W), got shape {tuple(x_T.shape)}")
    n, _, height, width = x_T.shape
    timesteps = scheduler.timesteps
    shard = shard if shard is not None else Shard()
    plans = _Plans(tasks, (height, width, x_T.device), len(timesteps), conditions, view_batch_size, shard)
    step_kwargs = _step_kwargs(scheduler, generator)
    first = 0 if start is None else start.step_index
    if start is not None and (tuple(start.x.shape) != tuple(x_T.shape) or not 0 <= first <= len(timesteps)):
        raise InvalidInputError(
            f"cannot start at step {first} of {len(timesteps)} from a canvas {tuple(start.x.shape)}; a start needs a "
            f"step in 0…{len(timesteps)} and a canvas of x_T's shape {tuple(x_T.shape)}"
        )
    x = (x_T if start is None else start.x).to(torch.float32)
    global_steps: dict[int, GlobalStep] = {}
    if global_view is not None:  # a bad factor or condition raises before any model call
        if not 0 <= global_view.condition < len(conditions):
            raise InvalidInputError(f"global view condition {global_view.condition} out of range for {len(conditions)}")
        _global_step(global_steps, global_view, plans.at(first if first < len(timesteps) else 0)[0], height, width)
    for step_index, t in enumerate(timesteps):
        if step_index < first:  # taken before the checkpoint
            continue
        plan = plans.at(step_index)[0]
        for hook in hooks:  # on every rank, whether or not it has tasks this step (collectives need all)
            begin = getattr(hook, "begin_step", None)
            if begin is not None:
                begin(x, step_index, t, scheduler, shard)
        run = functools.partial(
            _denoise_groups,
            denoiser,
            scheduler,
            plan,
            x=x,
            t=t,
            step_index=step_index,
            conditions=conditions,
            hooks=hooks,
            n=n,
        )
        passes = _passes(post_step, step_index, len(timesteps))
        saved = dict(vars(scheduler)) if passes > 1 else None  # single-step schedulers' state: redo from it
        for repeat in range(passes):
            if repeat:  # resampling (RePaint): x_{t−1} → x_t with fresh noise, then the same step again
                x = _jump_back(post_step, x, step_index, scheduler, generator)
                vars(scheduler).update(saved or {})
                run = functools.partial(run, x=x)
            model_sum, crop_sum, changed = _denoise_step_backing_off(run, plans, step_index, generator)
            if not shard.alone:  # the partial numerators of Eq. 5 (and of X) summed over the ranks: one all-reduce
                model_sum, crop_sum, changed = _sum_over_ranks(shard, model_sum, crop_sum, changed)
            fused_output = plan.normalise(model_sum)  # O of Eq. 5
            # X of docs/design.md §3; exactly x_t when every hook returned its input unchanged (the same tensor).
            fused_x = plan.normalise(crop_sum) if crop_sum is not None and changed else x
            if global_view is not None and global_view.active(step_index, len(timesteps)):
                glob = _global_step(global_steps, global_view, plan, height, width)
                g_in, level = glob.model_input(fused_x, scheduler, t)
                g_t = level.timestep.to(t.device if isinstance(t, Tensor) else "cpu")
                g_out = denoiser(g_in, g_t, [conditions[global_view.condition]], views=[glob.view])
                fused_output = glob.fuse(fused_output, fused_x, g_out, g_in, level, scheduler, t)  # Eq. 4, pooling
            for hook in post_step:  # a conditional sampler's x̂₀-space correction of O (DDNM), before the step
                condition = getattr(hook, "condition_output", None)
                if condition is not None:
                    redo = functools.partial(_fused_output, run, plans, plan, step_index, generator, shard)
                    fused_output = condition(fused_output, fused_x, step_index, t, scheduler, redo)
            stepped = scheduler.step(fused_output, t, fused_x, **step_kwargs)
            x = stepped.prev_sample.to(torch.float32)
            for hook in post_step:
                x = hook(x, step_index, scheduler).to(torch.float32)
        if not bool(torch.isfinite(x).all()):  # a NaN never recovers: stop now rather than decode a black image
            raise NonFiniteError(
                f"the canvas became non-finite at step {step_index + 1} of {len(timesteps)}; in half precision try "
                "bfloat16 (or float32), and lower the guidance scale or sync weight if they are large"
            )
        denoised = getattr(stepped, "pred_original_sample", None)  # x̂₀, where the scheduler reports it
        state = StepState(step_index, len(timesteps), t, x, plans.view_batch_size, denoised)
        if callback is not None and callback(state):
            break
    return x

"""The Gaussian field's matmul scratch (issue 30 item 4): reused across calls, never shared, never returned."""

from __future__ import annotations

import copy
import pickle
import threading

import pytest
import torch

from multidiffusion.core.oracle.field import GaussianField
from multidiffusion.core.oracle.posterior import PosteriorOperator

pytestmark = [pytest.mark.usefixtures("one_thread")]


def _inputs(seed: int, batch: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 12, 10, generator=g)
    mean = torch.rand(batch, 3, generator=g) * 2 - 1
    return x, mean, torch.full((batch,), 0.6), torch.full((batch,), 0.8)


def _fresh(field: GaussianField, *args: torch.Tensor) -> torch.Tensor:
    """``field.predict`` with its scratch lent out, so the call allocates its own buffer (the plain path)."""
    with field._scratch.like(args[0]):
        return field.predict(*args)


def test_predictions_are_new_tensors_and_the_scratch_is_reused() -> None:
    field = GaussianField(3.0, 0.3)
    outputs, pointers = [], set()
    for seed in range(3):
        x, mean, alpha, s = _inputs(seed)
        out = field.predict(x, mean, alpha, s, "epsilon")
        assert torch.equal(out, _fresh(field, x, mean, alpha, s))
        outputs.append((out.clone(), out))
        pointers.add(field._scratch._buffer.data_ptr())
    assert len(pointers) == 1  # one buffer for every call of this size
    for kept, out in outputs:  # later calls never wrote into an earlier result
        assert torch.equal(kept, out)
    x0, eps = field.posterior(*_inputs(7))
    assert x0.data_ptr() != eps.data_ptr()


def test_threads_get_their_own_scratch_and_the_same_numbers() -> None:
    """Concurrent callers (the web UI's workers share one model): whoever finds the scratch lent out gets a fresh
    buffer, so every result equals the one computed alone."""
    field = GaussianField(3.0, 0.3)
    cases = [_inputs(seed, batch=40) for seed in range(8)]
    expected = [_fresh(field, *case) for case in cases]
    got: list[torch.Tensor | None] = [None] * len(cases)
    start = threading.Barrier(len(cases))

    def run(i: int) -> None:
        start.wait()
        for _ in range(5):
            got[i] = field.predict(*cases[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for want, have in zip(expected, got, strict=True):
        assert have is not None and torch.equal(want, have)


def test_a_field_with_a_scratch_copies_and_pickles() -> None:
    field = GaussianField(2.0, 0.5)
    field.predict(*_inputs(0))
    for clone in (copy.deepcopy(field), pickle.loads(pickle.dumps(field))):
        assert clone == field  # the scratch is not part of the field's value
        assert clone._scratch is not field._scratch and clone._scratch._buffer is None
        assert torch.equal(clone.predict(*_inputs(1)), field.predict(*_inputs(1)))


def _allocating_forward(op: PosteriorOperator, x: torch.Tensor, mus: torch.Tensor) -> torch.Tensor:
    """The mixture posterior as first written, every intermediate a new tensor (the reference for bit-identity)."""
    a = op.a.reshape(-1, 1)
    z = torch.matmul(torch.matmul(op.u_h.T, x), op.u_w)
    if mus.shape[1] > 1 and not bool((mus == mus[:, :1]).all()):
        q = (z * op.ones_over_var).sum((-2, -1))
        energy = (op.ones * op.ones_over_var).sum((-2, -1)).reshape(-1, 1)
        log_r = a * (mus * q[:, None]).sum(-1) - 0.5 * a * a * energy * (mus * mus).sum(-1)
        r = torch.softmax(log_r, dim=1)
        mean = (r[:, :, None] * mus).sum(1)
    else:
        mean = mus[:, 0]
    mu = mean[:, :, None, None]
    z.sub_(op.a * mu * op.ones)
    z.mul_(op.coef)
    y = torch.matmul(torch.matmul(op.u_h, z), op.u_w.T)
    return y.add_(op.beta * mu)


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("components", [1, 3])
def test_the_mixture_posterior_through_the_scratch_is_bit_identical(prediction: str, components: int) -> None:
    field = GaussianField(3.0, 0.3)
    g = torch.Generator().manual_seed(components)
    x = torch.randn(6, 3, 12, 10, generator=g)
    mus = torch.rand(6, components, 3, generator=g) * 2 - 1
    alpha = torch.rand(6, generator=g) * 0.9 + 0.05
    s = (1 - alpha * alpha).sqrt()
    op = PosteriorOperator(field.eigenbasis(12, 10), alpha, s, prediction, torch.float32, x.device)
    expected = _allocating_forward(op, x, mus)
    assert torch.equal(op.forward(x, mus)[0], expected)
    assert torch.equal(op.forward(x, mus, torch.empty_like(x))[0], expected)
    assert torch.equal(field.predict_mixture(x, mus, alpha, s, prediction), expected)

"""x̂₀ from a model output and back (core.engine.foresee): prediction types and noise levels it cannot read."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from multidiffusion.core import InvalidInputError
from multidiffusion.core.engine.foresee import output_from_x0_at, step_level, x0_from_output

KINDS = ("flow_prediction", "epsilon", "v_prediction", "sample")


@pytest.mark.parametrize("kind", KINDS)
def test_output_from_x0_inverts_x0_from_output(kind):
    g = torch.Generator().manual_seed(0)
    x0, x = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    a, s = 0.6, 0.8
    output = output_from_x0_at(kind, a, s, x0, x)
    assert torch.allclose(x0_from_output(kind, a, s, output, x), x0, atol=1e-6)


def test_an_unknown_prediction_type_is_refused():
    x = torch.zeros(1, 3, 2, 2)
    supported = "supported: epsilon, v_prediction, sample, flow_prediction"
    with pytest.raises(InvalidInputError, match=f"cannot foresee x0 for prediction type 'score'; {supported}"):
        x0_from_output("score", 0.6, 0.8, x, x)
    with pytest.raises(InvalidInputError, match=f"cannot invert x0 for prediction type 'score'; {supported}"):
        output_from_x0_at("score", 0.6, 0.8, x, x)


def test_a_flow_scheduler_without_sigmas_is_refused():
    scheduler = SimpleNamespace(config=SimpleNamespace(prediction_type=None))  # FlowMatch* names none
    with pytest.raises(InvalidInputError, match="SimpleNamespace keeps no sigmas; a flow-matching model needs"):
        step_level(scheduler, torch.tensor(500))

"""Noise inversion (adapters.schedulers.inversion.InvertingScheduler): the arguments it refuses."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from multidiffusion.adapters.schedulers.inversion import InvertingScheduler
from multidiffusion.core import InvalidInputError

DDIM = SimpleNamespace(config={"_class_name": "DDIMScheduler"})  # only its config is read before refusing


def test_no_inversion_steps_are_refused():
    with pytest.raises(InvalidInputError, match="inversion needs at least one step, got 0"):
        InvertingScheduler(DDIM, torch.tensor(500), 0, {"prediction_type": "epsilon"})


def test_a_prediction_type_it_cannot_invert_is_refused():
    message = "cannot invert a model that predicts 'score'; supported: epsilon, v_prediction, sample, flow"
    with pytest.raises(InvalidInputError, match=message):
        InvertingScheduler(DDIM, torch.tensor(500), 4, {"prediction_type": "score"})

"""Views that are index maps (docs/sphere.md): a ViewTask with a gather ``index`` (and ``spread`` pairs) is fused by
the same Eq. 5 scatter-add as a crop, exactly."""

from __future__ import annotations

import pytest
import torch

from multidiffusion.core import FusionPlan, InvalidInputError, View, ViewTask, fuse, panorama_tasks, view_indices

pytestmark = pytest.mark.usefixtures("one_thread")


def _as_index_tasks(tasks, height, width):
    """The same tasks with their crops given as explicit index maps."""
    index = view_indices([t.view for t in tasks], height, width)
    return [
        ViewTask(View(0, 0, t.view.height, t.view.width), t.condition, t.weight, index[i]) for i, t in enumerate(tasks)
    ]


def test_a_crop_given_as_an_index_map_fuses_bit_identically():
    """Crops and the same cells as index maps: equal plans, crops and fused canvases, to the bit."""
    height, width = 12, 30
    tasks = panorama_tasks(height, width, 8, 3, weights="gaussian", circular=True)
    crops, maps = (
        FusionPlan(tasks, height, width, "cpu"),
        FusionPlan(_as_index_tasks(tasks, height, width), height, width, "cpu"),
    )
    assert torch.equal(crops.index, maps.index) and torch.equal(crops.denominator, maps.denominator)
    canvas = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    views = crops.crop(canvas, slice(None))
    assert torch.equal(views, maps.crop(canvas, slice(None)))
    values = torch.randn(views.shape, generator=torch.Generator().manual_seed(1))
    assert torch.equal(fuse(values, crops, 2), fuse(values, maps, 2))


def test_eq5_for_a_gather_with_repeated_cells_is_the_weighted_mean_of_its_pixels():
    """A map that reads one cell twice: Eq. 5 gives that cell the weighted mean of both pixels' values."""
    index = torch.tensor([0, 0, 1, 2])  # a 2 × 2 view on a 1 × 3 canvas: pixels 0 and 1 both read cell 0
    weight = torch.tensor([[1.0, 3.0], [1.0, 1.0]])
    plan = FusionPlan([ViewTask(View(0, 0, 2, 2), 0, weight, index)], 1, 3, "cpu")
    values = torch.tensor([[[[2.0, 6.0], [5.0, 7.0]]]])
    out = fuse(values, plan, 1)
    assert out.flatten().tolist() == pytest.approx([(2 * 1 + 6 * 3) / 4, 5.0, 7.0])


def test_spread_pairs_give_an_unread_cell_exactly_its_representatives_value():
    """Two views read cells 0–3 of a 1 × 5 canvas; cell 4 is pasted from the pixels reading cell 3 in each view."""
    w1, w2 = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 4.0]])
    spread1 = torch.tensor([[4], [1]])  # (cell 4, pixel 1): view 1's pixel 1 reads cell 3
    spread2 = torch.tensor([[4], [0]])  # view 2's pixel 0 reads cell 3
    tasks = [
        ViewTask(View(0, 0, 1, 2), 0, w1, torch.tensor([2, 3]), spread1),
        ViewTask(View(0, 0, 1, 2), 0, w2, torch.tensor([3, 0]), spread2),
    ]
    # cell 1 is read by no view and has no pair: refused, as any uncovered cell
    with pytest.raises(InvalidInputError, match="zero total view weight"):
        FusionPlan(tasks, 1, 5, "cpu")
    tasks.append(ViewTask(View(0, 0, 1, 2), 0, torch.ones(1, 2), torch.tensor([1, 1])))
    plan = FusionPlan(tasks, 1, 5, "cpu")
    values = torch.randn(3, 2, 1, 2, generator=torch.Generator().manual_seed(3))
    for batches in ([slice(None)], [slice(0, 1), slice(1, 3)], [slice(0, 2), slice(2, 3)]):
        out = torch.zeros(1, 2, 1, 5)
        for b in batches:
            plan.accumulate(out, values[b], b)
        plan.normalise(out)
        assert torch.allclose(out[..., 4], out[..., 3], rtol=0, atol=1e-6), batches
    assert torch.equal(plan.denominator[..., 4], plan.denominator[..., 3])


@pytest.mark.parametrize(
    ("index", "spread", "match"),
    [
        (torch.tensor([0, 1, 2]), None, "index map has 3 cells"),
        (torch.tensor([0, 1, 2, 99]), None, "reads outside"),
        (torch.tensor([0, 1, 2, -1]), None, "reads outside"),
        (torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1]), r"spread must be \(2, K\)"),
        (torch.tensor([0, 1, 2, 3]), torch.tensor([[5], [9]]), "outside the view"),
    ],
)
def test_bad_index_maps_are_refused_in_one_line(index, spread, match):
    task = ViewTask(View(0, 0, 2, 2), 0, torch.ones(2, 2), index, spread)
    with pytest.raises(InvalidInputError, match=match):
        FusionPlan([task, ViewTask(View(0, 0, 2, 2), 0, torch.ones(2, 2))], 2, 3, "cpu")

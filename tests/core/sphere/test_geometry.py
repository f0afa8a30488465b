"""The sphere's geometry (docs/sphere.md): directions, orientations, index maps, the reduced grid, the density."""

from __future__ import annotations

import math

import pytest
import torch

from multidiffusion.core import FusionPlan, InvalidInputError
from multidiffusion.core.sphere.density import DENSITY_TOLERANCE, density_error, fov_for, height_for
from multidiffusion.core.sphere.maps import gather_index, noise_figures, reduced_grid, representatives
from multidiffusion.core.sphere.orientations import covering_orientations, ring_pitches
from multidiffusion.core.sphere.projection import (
    Orientation,
    cell_directions,
    nearest_cells,
    rotation,
    view_rays,
)
from multidiffusion.core.sphere.reproject import reproject
from multidiffusion.core.sphere.tasks import sphere_layout

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("o", [Orientation(0, 0), Orientation(73, -20, 15), Orientation(-180, 90), Orientation(5, -90)])
def test_rotations_are_proper_and_point_the_axis_at_yaw_and_pitch(o):
    r = rotation(o)
    assert torch.allclose(r @ r.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert math.isclose(float(torch.det(r)), 1.0, abs_tol=1e-12)
    lat, lon = math.radians(o.pitch), math.radians(o.yaw)
    axis = torch.tensor(
        [math.cos(lat) * math.sin(lon), math.sin(lat), math.cos(lat) * math.cos(lon)], dtype=torch.float64
    )
    assert torch.allclose(r[:, 2], axis, atol=1e-12)


def test_a_level_view_has_north_up_and_a_pole_views_up_points_along_the_documented_longitude():
    up = rotation(Orientation(40, 10))[:, 1]
    assert float(up[1]) > 0.9  # level camera: up is (nearly) north
    north = rotation(Orientation(30, 90))[:, 1]  # north pole, roll 0: up along longitude yaw + 180°
    assert math.isclose(math.degrees(math.atan2(float(north[0]), float(north[2]))), -150.0, abs_tol=1e-9)
    south = rotation(Orientation(30, -90))[:, 1]  # south pole: along longitude yaw
    assert math.isclose(math.degrees(math.atan2(float(south[0]), float(south[2]))), 30.0, abs_tol=1e-9)


def test_every_cell_centre_maps_back_to_its_own_cell_and_longitude_wraps():
    height = 9
    cells = nearest_cells(cell_directions(height), height)
    assert torch.equal(cells.reshape(-1), torch.arange(height * 2 * height))
    eps = 1e-6
    lat = 0.1
    west = torch.tensor(
        [math.cos(lat) * math.sin(-math.pi + eps), math.sin(lat), math.cos(lat) * math.cos(-math.pi + eps)]
    )
    east = torch.tensor(
        [math.cos(lat) * math.sin(math.pi - eps), math.sin(lat), math.cos(lat) * math.cos(math.pi - eps)]
    )
    w, e = int(nearest_cells(west, height)), int(nearest_cells(east, height))
    assert w % (2 * height) == 0 and e % (2 * height) == 2 * height - 1 and w // (2 * height) == e // (2 * height)


def test_a_view_at_the_equator_reads_the_cells_of_a_crop_at_its_centre():
    """At κ = 1 the centre pixels of a level view aimed at a cell corner read consecutive cells, like a crop."""
    size, fov = 16, 90.0
    height = round(math.pi / (2 * math.tan(math.radians(fov) / 2) / size))  # one cell per centre pixel
    yaw = 0.0  # between columns height − 1 and height: the pixel centres either side are cell centres
    index = gather_index(Orientation(yaw, 0), fov, size, height).reshape(size, size)
    middle = index[size // 2, size // 2 - 2 : size // 2 + 2] % (2 * height)
    assert (middle.diff() == 1).all()
    rays = view_rays(Orientation(yaw, 0), fov, size)
    assert torch.allclose(rays.norm(dim=-1), torch.ones(size, size, dtype=torch.float64))


def test_rings_split_the_meridian_and_the_poles_have_one_view_each():
    assert ring_pitches(90, 0.5) == [-90, -45, 0, 45, 90]
    o = covering_orientations(90, 0.5)
    assert sum(abs(x.pitch) == 90 for x in o) == 2 and len(o) == 22
    with pytest.raises(InvalidInputError, match="overlap"):
        ring_pitches(90, 1.0)
    with pytest.raises(InvalidInputError, match="field of view"):
        covering_orientations(180, 0.5)


def test_the_reduced_grid_keeps_about_cos_latitude_of_each_row_and_maps_kept_cells_to_themselves():
    height = 24
    grid = reduced_grid(height)
    assert torch.equal(grid[grid], grid)
    kept = torch.unique(grid).numel()
    expected = sum(
        max(1, round(2 * height * math.cos(math.pi / 2 - (r + 0.5) * math.pi / height))) for r in range(height)
    )
    assert kept == expected
    assert torch.equal(grid // (2 * height), torch.arange(grid.numel()) // (2 * height))  # a cell stays in its row


def test_representatives_are_read_cells_and_the_nearest_ones():
    read = torch.zeros(4, 8, dtype=torch.bool)
    read[1, 2] = read[2, 6] = True
    reps = representatives(read)
    assert set(reps.tolist()) == {1 * 8 + 2, 2 * 8 + 6}
    assert int(reps[1 * 8 + 3]) == 1 * 8 + 2 and int(reps[2 * 8 + 7]) == 2 * 8 + 6
    with pytest.raises(InvalidInputError, match="no view reads"):
        representatives(torch.zeros(2, 4, dtype=torch.bool))


def test_the_sphere_layout_covers_every_cell_and_unread_cells_fuse_to_their_representative():
    layout = sphere_layout(24, 16, fov_for(24, 16))
    plan = FusionPlan(list(layout.tasks), 24, 48, "cpu")  # raises if any cell had zero weight
    canvas = torch.randn(1, 2, 24, 48, generator=torch.Generator().manual_seed(0))
    crops = plan.crop(canvas, slice(None))
    out = torch.zeros_like(canvas)
    plan.accumulate(out, crops, slice(None))
    fused = plan.normalise(out).reshape(1, 2, -1)
    expected = canvas.reshape(1, 2, -1)[..., layout.representatives]
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-5)
    assert bool(layout.read.reshape(-1)[layout.representatives].all())


def test_views_that_leave_the_sphere_unseen_are_refused():
    with pytest.raises(InvalidInputError, match="outside every view"):
        sphere_layout(16, 16, 60.0, orientations=[Orientation(0, 0)])


def test_fov_for_and_height_for_invert_each_other_and_hit_the_target_density():
    for height in (40, 54, 80):
        fov = fov_for(height, 32)
        assert abs(density_error(height, 32, fov)) < 1e-9
        assert height_for(fov, 32) == height
    assert abs(density_error(height_for(90, 32), 32, 90)) < DENSITY_TOLERANCE


def test_at_the_chosen_density_the_noise_a_view_reads_is_white_where_its_weight_is():
    """docs/sphere.md, "Noise": at κ* pixels share cells towards a 90° view's edges (neighbour correlation about 0.2
    over the whole view), where its Gaussian weight is small: weighted, the correlation is about 0.05 (measured
    0.056 mean, 0.095 worst view); a canvas twice as dense reads few cells twice."""
    window, fov = 32, 90.0
    layout = sphere_layout(height_for(fov, window), window, fov)
    figures = [noise_figures(t.index, window, t.weight) for t in layout.tasks]
    assert max(f.weighted_correlation for f in figures) < 0.1
    assert max(f.neighbour_correlation for f in figures) < 0.25
    assert all(f.variance == 1.0 for f in figures)
    assert sum(f.duplicated for f in figures) / len(figures) > 0.5
    dense = sphere_layout(2 * height_for(fov, window), window, fov)  # pixels share cells only at the far corners
    assert sum(noise_figures(t.index, window).duplicated for t in dense.tasks) / len(dense.tasks) < 0.05


def test_reprojection_reads_canvas_values_unchanged():
    canvas = torch.randn(2, 3, 10, 20, generator=torch.Generator().manual_seed(1))
    view = reproject(canvas, Orientation(180, 0), 60.0, 8)
    index = gather_index(Orientation(180, 0), 60.0, 8, 10)
    assert torch.equal(view, canvas.reshape(2, 3, -1)[..., index].reshape(2, 3, 8, 8))
    with pytest.raises(InvalidInputError, match="equirectangular"):
        reproject(torch.zeros(1, 3, 10, 10), Orientation(0, 0), 60.0, 8)

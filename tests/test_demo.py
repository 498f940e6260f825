"""The demo job (`make demo` runs it on the full body): canonical poses rendered from the
paper's views into a grid, a turntable video and coloured meshes."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import trimesh

from helpers import LOW_POLY, run_train

POSES = ["t_pose", "arms_raised", "squat"]


@pytest.mark.slow
def test_showcase_demo_outputs_are_real(tmp_path):
    run_dir = tmp_path / "demo"
    run_train(
        f"body.topology={LOW_POLY}",
        "render.height=64",
        "render.width=64",
        f"stage.poses=[{','.join(POSES)}]",
        "stage.turntable_frames=12",
        f"hydra.run.dir={run_dir}",
    )
    result = json.loads((run_dir / "result.json").read_text())
    assert result["poses"] == POSES

    grid = iio.imread(run_dir / "showcase_grid.png")
    columns = 4 + 2 + 1  # fixed azimuths, paper-sampled views, textureless
    assert grid.shape[0] > 3 * 64 and grid.shape[1] > columns * 64
    # The front view of the first row shows the body: red torso pixels on a white background.
    front = grid[2:66, 2:66].astype(int)
    red = (front[..., 0] > 150) & (front[..., 1] < 80) & (front[..., 2] < 80)
    white = (front > 245).all(-1)
    assert red.sum() > 20 and white.mean() > 0.5

    # Arms raised: the body's pixels reach higher in the frame than in the T-pose.
    def top_row(tile):
        rows = np.where((tile < 240).any(-1).any(-1))[0]
        return rows.min()

    t_tile, raised_tile = grid[2:66, 2:66], grid[68:132, 2:66]
    assert top_row(raised_tile) < top_row(t_tile)

    frames = list(iio.imiter(run_dir / "turntable.mp4"))
    assert len(frames) == 12
    # The camera circles the moving body: frames differ from each other.
    assert np.abs(frames[0].astype(int) - frames[6].astype(int)).mean() > 1.0

    for pose in POSES:
        mesh = trimesh.load(run_dir / "meshes" / f"{pose}.ply", process=False)
        assert len(mesh.vertices) == 615
        assert mesh.visual.vertex_colors[:, :3].std() > 10  # coloured by body region, not grey
    raised = trimesh.load(run_dir / "meshes" / "arms_raised.ply", process=False)
    t_pose = trimesh.load(run_dir / "meshes" / "t_pose.ply", process=False)
    assert raised.vertices[:, 2].max() > t_pose.vertices[:, 2].max() + 0.2

"""The point prompts of automatic mask generation: a regular grid of cell centres over the unit
square, one grid per crop layer (later layers may have fewer points per side)."""

from typing import List

import numpy as np


def point_grid(points_per_side: int) -> np.ndarray:
    """The centres of an n x n grid of equal cells over [0, 1] x [0, 1], row by row.

    Arguments:
      points_per_side (int): n, the points along each side.

    Returns:
      (np.ndarray): float64 (n * n, 2) as (x, y); x varies fastest.
    """
    centres = np.linspace(0.5 / points_per_side, 1 - 0.5 / points_per_side, points_per_side)
    xs, ys = np.meshgrid(centres, centres)  # n x n each; row i has y = centres[i]
    return np.stack([xs.ravel(), ys.ravel()], axis=-1)


def layer_point_grids(points_per_side: int, crop_n_layers: int, downscale_factor: int) -> List[np.ndarray]:
    """One point grid per crop layer: layer i has int(points_per_side / downscale_factor ** i)
    points per side.

    Arguments:
      points_per_side (int): points per side in layer 0 (the whole image).
      crop_n_layers (int): the number of crop layers after layer 0.
      downscale_factor (int): how much fewer points per side each layer has than the one before.

    Returns:
      (list(np.ndarray)): crop_n_layers + 1 grids, each float64 (n_i * n_i, 2) in [0, 1].
    """
    return [point_grid(int(points_per_side / downscale_factor**layer)) for layer in range(crop_n_layers + 1)]

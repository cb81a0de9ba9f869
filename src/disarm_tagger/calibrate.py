"""Fused scores -> probabilities: isotonic regression interpolated between block centres. Pure numpy.

Plain isotonic regression is a step function: every fused score inside one block gets the same
probability, so suggestions an analyst should see in order print as ties. Interpolating linearly between
the centres of the isotonic blocks keeps the fitted curve's shape (and its calibration, reported in the
eval) while every distinct fused score inside the fitted range gets a distinct probability. Outside that
range the curve is flat; a tie-break of at most 0.001 keeps the fused order there too.
"""

from __future__ import annotations

import numpy as np

TIE_BREAK = 1e-3


def isotonic_knots(x: np.ndarray, y: np.ndarray, *, interpolate: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Knots of the non-decreasing least-squares fit of y on x (pool-adjacent-violators), for ``apply``.

    ``interpolate``: one knot per block at its weighted x centre (a strictly increasing curve between
    blocks); else the two ends of every block (scikit-learn's step function, with ties inside blocks).

    >>> x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 1.0, 0.0, 1.0])
    >>> [k.tolist() for k in isotonic_knots(x, y)]
    [[1.0, 2.5, 4.0], [0.0, 0.5, 1.0]]
    >>> [k.tolist() for k in isotonic_knots(x, y, interpolate=False)]
    [[1.0, 1.0, 2.0, 3.0, 4.0, 4.0], [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]]
    """
    order = np.argsort(x, kind="stable")
    xs, ys = np.asarray(x, float)[order], np.asarray(y, float)[order]
    ux, start = np.unique(xs, return_index=True)  # equal x values form one point, weighted by their count
    counts = np.diff(np.append(start, len(xs)))
    sums_y = np.add.reduceat(ys, start)
    blocks: list[list[float]] = []  # [sum of x * weight, sum of y, weight, lowest x, highest x]
    for xv, sy, w in zip(ux, sums_y, counts):
        blocks.append([xv * w, sy, float(w), xv, xv])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] >= blocks[-1][1] / blocks[-1][2]:
            last = blocks.pop()
            prev = blocks[-1]
            blocks[-1] = [prev[0] + last[0], prev[1] + last[1], prev[2] + last[2], prev[3], last[4]]
    b = np.array(blocks)
    mean_y = b[:, 1] / b[:, 2]
    if interpolate:
        return b[:, 0] / b[:, 2], mean_y
    return b[:, 3:5].ravel(), np.repeat(mean_y, 2)


def apply(knots_x: np.ndarray, knots_y: np.ndarray, fused: np.ndarray) -> np.ndarray:
    """Probabilities for fused scores: linear between block centres, flat outside, order kept by a tie-break.

    >>> apply(np.array([1.0, 3.0]), np.array([0.0, 1.0]), np.array([2.0, 1.5])).round(4).tolist()
    [0.5002, 0.2504]
    """
    fused = np.asarray(fused, float)
    return np.interp(fused, knots_x, knots_y) * (1 - TIE_BREAK) + TIE_BREAK * fused / (1.0 + np.abs(fused))

"""One way to compare a result with the reference, and one table of how close is close enough.

`assert_close` reports the worst element (its index, both values, the error) and the share of
elements out of tolerance, so a failure says where to look rather than "not equal".
"""

from __future__ import annotations

import numpy as np
import torch

# (atol, rtol) per dtype of the computation under test, against the float64 reference.
TOLERANCE = {
    torch.float64: (1e-12, 1e-12),
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (2e-2, 2e-2),
    torch.float16: (2e-3, 2e-3),
}


def to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def assert_close(actual, expected, dtype=torch.float32, atol=None, rtol=None, what="value"):
    """Assert |actual - expected| <= atol + rtol * |expected| elementwise, explaining failures."""
    default_atol, default_rtol = TOLERANCE[dtype]
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    a, e = to_numpy(actual), to_numpy(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != reference shape {e.shape}"
    if a.size == 0:
        return
    error = np.abs(a - e)
    bad = ~(error <= atol + rtol * np.abs(e))  # NaN counts as bad
    if bad.any():
        worst = np.unravel_index(np.nanargmax(np.where(np.isnan(error), np.inf, error)), a.shape)
        raise AssertionError(
            f"{what}: {bad.mean():.2%} of {a.size} elements out of tolerance "
            f"(atol={atol:g}, rtol={rtol:g}); worst at index {tuple(int(i) for i in worst)}: "
            f"got {a[worst]!r}, reference {e[worst]!r}, error {error[worst]:.3g}"
        )

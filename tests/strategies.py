"""Hypothesis strategies shared by the tests: schedules, batches and timesteps.

Every seed and shape a test uses is drawn here, so a failure prints the exact example.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from minidiff.reference import make_schedule

seeds = st.integers(min_value=0, max_value=2**32 - 1)


@st.composite
def schedules(draw, kinds=("linear", "cosine"), max_T=1000):
    """A reference schedule: the course's own, or any valid linear or cosine one."""
    kind = draw(st.sampled_from(kinds))
    T = draw(st.integers(min_value=1, max_value=max_T))
    if kind == "linear":
        beta1 = draw(st.floats(min_value=1e-5, max_value=0.05))
        beta2 = draw(st.floats(min_value=beta1, max_value=0.5))
        return make_schedule("linear", T, beta1, beta2)
    return make_schedule("cosine", T)


# Batch shapes (B, C, H, W): batch 1, odd and prime sizes, sizes smaller than any block.
shapes = st.tuples(
    st.integers(1, 5), st.sampled_from([1, 3]), st.integers(1, 7), st.integers(1, 7)
)


def normal(seed: int, shape) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def random_t(seed: int, batch: int, T: int, low: int = 1) -> np.ndarray:
    """One timestep t per sample, mixed within the batch."""
    return np.random.default_rng(seed).integers(low, T + 1, size=batch)

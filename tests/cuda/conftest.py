"""Device tests: everything here is marked `cuda` and runs on a CUDA GPU only.

Without one each test is skipped with the reason below. `benchmarks/gpu.py` runs them on a lent
GPU (`pytest -m cuda tests/cuda`) and records the outcome in benchmarks/RESULTS.md.
"""

import pytest
import torch

NO_CUDA = ("needs a CUDA GPU: torch.cuda.is_available() is False here "
           "(benchmarks/gpu.py runs these on a lent one)")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=NO_CUDA)
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)

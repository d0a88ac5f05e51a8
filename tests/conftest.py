"""Test-wide settings.

Hypothesis draws every seed and shape. Profiles, chosen by HYPOTHESIS_PROFILE (CI sets CI=true,
which picks "ci"):
- "ci": derandomized (the same examples on every run, so CI is reproducible), fewer examples;
- "dev": random, more examples, for hunting counterexamples locally.
`deadline=None` everywhere: the Triton interpreter and the first torch call are slow to warm up.

Where the kernels run is chosen here, explicitly and before any test module imports Triton:
natively on a CUDA GPU, else in Triton's CPU interpreter (`minidiff.kernels.runtime`).
"""

import importlib.util
import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=25,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", deadline=None, max_examples=100, print_blob=True)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev")
)

if importlib.util.find_spec("triton") is not None:
    from minidiff.kernels import runtime

    runtime.choose_backend()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny networks gain nothing from threads, and on a busy 2-core machine torch's spinning
    worker threads slow them down many times over. Modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def disk_full_at_second_fsync(monkeypatch):
    """A disk that fills up while a command writes its outputs: the first fsync succeeds, every
    later one raises ENOSPC, as a real full disk does at the write that no longer fits."""
    import errno

    real_fsync, calls = os.fsync, []

    def full_disk(fd):
        calls.append(fd)
        if len(calls) >= 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    return calls

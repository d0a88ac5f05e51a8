"""Choosing where the kernels run is an explicit call, not an import side effect.

Each check runs in a fresh interpreter: this test session chose its backend in conftest.py.
"""

import os
import subprocess
import sys

import torch

INTERPRETED = not torch.cuda.is_available()


def run_python(code: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_importing_the_kernels_sets_nothing_and_imports_no_triton():
    out = run_python("import os, sys; import minidiff.kernels; "
                     "print('TRITON_INTERPRET' in os.environ, 'triton' in sys.modules)")
    assert out == ["False", "False"]


def test_a_wrapper_chooses_the_backend_on_first_use_and_load_still_works():
    """No ritual: the first `kernels.ddpm_step` chooses where the kernels run (natively on a GPU,
    else the interpreter); an explicit `kernels.load()` after it changes nothing."""
    out = run_python(
        "import os, sys; from minidiff import kernels\n"
        "print('triton' in sys.modules, callable(kernels.ddpm_step), kernels.runtime.backend())\n"
        "print(kernels.load() is kernels, kernels.runtime.backend(), "
        "os.environ.get('TRITON_INTERPRET'))"
    )
    backend = "interpreter" if INTERPRETED else "cuda"
    assert out == ["False", "True", backend, "True", backend, "1" if INTERPRETED else "None"]


def test_kernels_imported_before_the_choice_still_run_where_chosen():
    """A kernel module imported first (its @jit functions defined for the GPU) is re-wrapped for
    the interpreter by the choice, and gives the torch step's result."""
    out = run_python(
        "import torch\nfrom minidiff.kernels import launch, samplers\nfrom minidiff import kernels,"
        " samplers as torch_samplers, make_schedule\nkernels.load()\n"
        "device = 'cuda' if kernels.runtime.on_cuda() else 'cpu'\n"
        "x, e = torch.randn(2, 3, 5, 5, device=device), torch.randn(2, 3, 5, 5, device=device)\n"
        "s = make_schedule(device=device)\n"
        "got = samplers.ddim_step(x, e, torch.tensor([9, 4], device=device), 0, s)\n"
        "want = torch_samplers.ddim_step(x, e, torch.tensor([9, 4], device=device), 0, s)\n"
        "print(bool(torch.allclose(got, want, atol=1e-5)))"
    )
    assert out == ["True"]

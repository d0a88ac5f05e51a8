"""minidiff.kernels: hand-written Triton kernels, each proven equal to minidiff.reference.

Importing this package chooses the backend first (see `runtime`): with no CUDA device the kernels
run in Triton's interpreter on CPU tensors, slowly but with the same results.
"""

from . import runtime  # noqa: F401  (must run before triton is used: sets TRITON_INTERPRET)

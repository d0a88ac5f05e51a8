"""minidiff.kernels: hand-written Triton kernels, each proven equal to minidiff.reference."""

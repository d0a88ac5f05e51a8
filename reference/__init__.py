"""minidiff.reference: the NumPy specification of the diffusion math (float64, NumPy only)."""

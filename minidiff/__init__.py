"""minidiff: diffusion models from scratch."""

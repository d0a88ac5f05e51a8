"""Measuring samples: FID in a small classifier's features, conditional accuracy, memorisation,
texture (patch SWD, the high-frequency ratio)."""

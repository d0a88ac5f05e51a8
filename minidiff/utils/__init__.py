"""Plumbing every layer uses: one error type, atomic file writes, choosing the torch device."""

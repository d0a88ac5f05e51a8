"""`minidiff.load`: a trained run, ready to sample from Python in one line.

    pipe = minidiff.load()                            # the newest run under runs/ (or a path)
    images = pipe.sample(32, classes="hero")          # (32, 3, 16, 16) float32, clipped to [-1, 1]
    pixels = pipe.sample(8, mix={"hero": 1, "food": 0.6}, normalize="clip")  # (8, 16, 16, 3) uint8

What `sample` returns: float32 images (n, C, H, W) clipped to [-1, 1], the range of the training
data (the course's `Normalize(0.5, 0.5)`): `(images + 1) / 2` is ready for matplotlib, and
`minidiff.data.images.save_grid` saves them. `clip=False` gives the sampler's raw output, which
overshoots [-1, 1] a little (most at few steps); `normalize="clip"` or `"per-image"` gives uint8
pixels (n, H, W, C), the course's `.npy` layout.

A *context* c is what the network is conditioned on (the course's lab 3): a one-hot vector per
class, any real vector to mix classes (the course's `[1, 0, 0.6, 0, 0]`), or the zero vector, the
"null" context the network was trained on 10% of the time, which asks for no class in particular.
`load` reads the checkpoint (checked by `minidiff.checkpoint` before anything is built from it)
and builds the network; the loop and the steps live in `minidiff.samplers`; this module turns
names into contexts and tensors into pixels.

A latent run (`python -m minidiff train --autoencoder RUN`) denoises latents of `sample_shape`
and `sample` decodes them with the autoencoder its checkpoint names, checked to be the very one
it trained on (`minidiff.autoencoder.autoencoder_of`): the same call returns images of
`image_shape`, with no new argument.

Tutorial: tutorials/05_control.py.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from minidiff.autoencoder import Latents, autoencoder_of, beside
from minidiff.checkpoint import load_checkpoint, mismatch, resolve_checkpoint
from minidiff.data.images import NORMALIZE, to_uint8
from minidiff.noising import Schedule, make_schedule
from minidiff.samplers import ETA, SAMPLER, SamplerConfig, sample_loop  # ETA: DDIM's eta
from minidiff.unet import UnetConfig, build_unet
from minidiff.utils.device import resolve_device
from minidiff.utils.errors import MinidiffError

__all__ = ["Pipeline", "load"]

BATCH_SIZE = 256  # images per network call: memory stays flat in n (RESULTS.md, Sampling)
MIX_WEIGHTS = (-2.0, 2.0)  # the range a context weight may take (`mix_weight`)


def load(run_or_ckpt: str | os.PathLike | None = None, device="auto", weights: str = "ema",
         runs_dir="runs") -> Pipeline:
    """Load a run folder or checkpoint file (None: the newest run under `runs_dir`) for sampling:
    the EMA weights where the run kept them (`weights="model"`: the raw ones), the schedule it
    was trained with, its class names, and a latent run's autoencoder."""
    device = resolve_device(device)
    path = resolve_checkpoint(run_or_ckpt, runs_dir)
    state = load_checkpoint(path, course=True)  # checked: the weights fit the config's network
    config = state["config"]
    try:
        schedule = make_schedule(**config["schedule"], device=device)
    except ValueError as error:
        raise mismatch(path, str(error).splitlines()[0][:120]) from None
    model = build_unet(UnetConfig(**config["unet"]))
    model.load_state_dict(state["ema"] if weights == "ema" and state.get("ema") else state["model"])
    decoder = autoencoder_of(config, path, device)  # None: a pixel-space run
    return Pipeline(model.to(device).eval(), schedule, list(state.get("classes", [])), config,
                    path, decoder=decoder)


@dataclass
class Pipeline:
    """A network in eval mode, its schedule and class names: everything `sample` needs."""

    model: torch.nn.Module
    schedule: Schedule
    classes: list[str]
    config: dict
    path: Path | None = None
    batch_size: int = BATCH_SIZE  # images per network call, when `sample` is not told
    decoder: Latents | None = None  # a latent run's autoencoder: samples are decoded by it

    @property
    def n_cfeat(self) -> int:
        """Length of the context vector (0: an unconditional network)."""
        return int(getattr(self.model, "n_cfeat", len(self.classes)))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images `sample` returns (a latent run's: decoded)."""
        if self.decoder is not None:
            return tuple(self.decoder.record["image_shape"])
        return self.sample_shape

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of what the sampler denoises: the images, or a latent run's latents."""
        unet = self.config.get("unet", {})
        size = int(unet.get("height", 16))
        return int(unet.get("in_channels", 3)), size, size

    def contexts(self, n: int, classes=None, mix=None) -> torch.Tensor | None:
        """The (n, n_cfeat) contexts for a batch, or None for the null context.

        `classes`: a name or index, or a list of them cycled over the batch (one-hot rows).
        `mix`: a {name or index: weight} dict or a real vector of n_cfeat numbers, or a list of
        either, cycled over the batch; or a tensor (n_cfeat,) or (k, n_cfeat).
        """
        if classes is None and mix is None:
            return None
        if classes is not None and mix is not None:
            raise MinidiffError("give classes or mix, not both (a one-hot class is a mix too)")
        if self.n_cfeat == 0:
            raise MinidiffError("this run was trained without classes (n_cfeat=0): it cannot be "
                                "conditioned; sample without classes/mix/guidance")
        rows = _rows(classes) if mix is None else _rows(mix, numbers_are_a_vector=True)
        vectors = [self._one_hot(r) if mix is None else self._mix_vector(r) for r in rows]
        table = torch.stack(vectors)  # (k, n_cfeat), cycled over the batch
        return table[torch.arange(n) % len(table)].to(self.schedule.device)

    def sample(self, n: int = 32, sampler: str = SAMPLER, steps: int = 25, eta: float = ETA,
               classes=None, mix=None, guidance: float | None = None, seed: int = 0,
               fused: bool = False, return_intermediates: bool = False,
               normalize: str | None = None, spacing: str | None = None, save_every=None,
               clip: bool = True, batch_size: int | None = None, guidance_interval=None):
        """Generate n images; see `SamplerConfig` for the sampler settings (default
        SDE-DPM-Solver++(2M) at 25 steps; `sampler="ddim"` with `eta` for DDIM, the course's;
        `guidance_interval=(lo, hi)`: guide only at timesteps lo <= t <= hi).

        Returns float32 images (n, C, H, W) clipped to [-1, 1] (`clip=False`: unclipped), or with
        `normalize` ("clip" or "per-image", see `minidiff.data.images`) uint8 pixels (n, H, W, C).
        With `return_intermediates`, returns (images, frames): frames stacked (F, n, ...) alike;
        a latent run's frames show each latent (`minidiff.autoencoder.latent_picture`) to the
        left of its decoding, (F, n, C, H, 2W).

        The network sees at most `batch_size` (default `self.batch_size`) images at once, so
        memory does not grow with n.
        Batch b draws its noise with `batch_seed(seed, b)`: image i depends on (seed, i,
        batch_size) only, never on n, and for n <= batch_size the batch is one sampling loop.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise MinidiffError(f"n={n!r} must be a positive number of images")
        batch_size = self.batch_size if batch_size is None else batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise MinidiffError(f"batch_size={batch_size!r} must be a positive number of images")
        if normalize is not None and normalize not in NORMALIZE:
            raise MinidiffError(f"normalize={normalize!r} is not one of {', '.join(NORMALIZE)}")
        config = SamplerConfig(sampler=sampler, steps=steps, eta=eta, spacing=spacing,
                               guidance=guidance, fused=fused, save_every=save_every,
                               guidance_interval=guidance_interval)
        c = self.contexts(n, classes, mix)
        images, frames = [], []
        for b, first in enumerate(range(0, n, batch_size)):
            size = min(batch_size, n - first)
            x0, kept, _ = sample_loop(self.model, self.schedule, (size, *self.sample_shape),
                                      None if c is None else c[first:first + size], config,
                                      seed=batch_seed(seed, b), keep_frames=return_intermediates)
            if self.decoder is not None:  # latent diffusion: each frame, latent beside image
                kept = [beside(f, self.decoder.decode(f)) for f in kept]
                x0 = self.decoder.decode(x0)
            images.append(_output(x0, normalize, clip))  # uint8 or on the CPU: frees the device
            if return_intermediates:
                frames.append(torch.stack([_output(f, normalize, clip) for f in kept]))
        if not return_intermediates:
            return torch.cat(images)
        return torch.cat(images), torch.cat(frames, dim=1)

    def _index(self, key) -> int:
        names = [c.lower() for c in self.classes]
        if isinstance(key, str) and key.strip().lower() in names:  # a name before an index:
            return names.index(key.strip().lower())  # classes "1", "2", "10" are names
        if isinstance(key, str) and key.strip().lstrip("-").isdigit():
            key = int(key)
        if isinstance(key, int) and not isinstance(key, bool):
            if not 0 <= key < self.n_cfeat:
                raise MinidiffError(f"class index {key} is outside [0, {self.n_cfeat - 1}]")
            return key
        known = ", ".join(self.classes) or f"indices 0..{self.n_cfeat - 1} (the run names none)"
        raise MinidiffError(f"unknown class {key!r}; this run's classes are {known}")

    def _one_hot(self, key) -> torch.Tensor:
        vector = torch.zeros(self.n_cfeat)
        vector[self._index(key)] = 1.0
        return vector

    def _mix_vector(self, row) -> torch.Tensor:
        if isinstance(row, Mapping):
            vector = torch.zeros(self.n_cfeat)
            for key, weight in row.items():
                vector[self._index(key)] = mix_weight(weight)
            return vector
        vector = torch.as_tensor([mix_weight(w) for w in row], dtype=torch.float32)
        if vector.shape != (self.n_cfeat,):
            raise MinidiffError(f"a mix vector needs {self.n_cfeat} numbers (one per class), "
                                f"got {len(vector)}")
        return vector


def _rows(spec, numbers_are_a_vector: bool = False) -> list:
    """A single class or mix, or a list of them, as a list of rows."""
    if isinstance(spec, torch.Tensor):
        return spec.reshape(-1, spec.shape[-1]).tolist() if spec.ndim else [int(spec)]
    if isinstance(spec, (str, int, Mapping)):
        return [spec]
    is_number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    if numbers_are_a_vector and isinstance(spec, Sequence) and all(map(is_number, spec)):
        return [spec]  # one real vector such as the course's [1, 0, 0.6, 0, 0]
    if isinstance(spec, Sequence) and spec:
        return list(spec)
    raise MinidiffError(f"cannot read {spec!r} as a class or mix: give a name, an index, a "
                        "{name: weight} dict, a vector, or a non-empty list of them")


def mix_weight(weight, name: str = "mix weight") -> float:
    """A context weight, checked against `MIX_WEIGHTS`: the network was trained on 0 and 1 only,
    and far outside them (hero=1e30) every image comes out black."""
    try:
        value = float(weight)
    except (TypeError, ValueError):
        raise MinidiffError(f"{name} {weight!r} is not a number") from None
    low, high = MIX_WEIGHTS
    if not math.isfinite(value) or not low <= value <= high:
        raise MinidiffError(f"{name} {weight!r} is outside the valid range [{low:g}, {high:g}] "
                            "(the network was trained on weights 0 and 1)")
    return value


def batch_seed(seed: int, b: int) -> int:
    """The noise seed of batch b: `seed` itself for the first, a hash of (seed, b) after it."""
    if b == 0:
        return seed
    digest = hashlib.sha256(f"minidiff batch {seed} {b}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _output(x: torch.Tensor, normalize: str | None, clip: bool) -> torch.Tensor:
    """Sampler output -> what `sample` returns (its docstring)."""
    if normalize is not None:
        return torch.from_numpy(to_uint8(x, normalize))
    return x.clamp(-1, 1) if clip else x

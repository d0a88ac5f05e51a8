"""Latent diffusion's plumbing: a trained autoencoder read back, a dataset encoded to its latents
once, and a diffusion run tied to the very autoencoder it was trained on.

`python -m minidiff train --autoencoder RUN` encodes every training image once, before the first
step (`encode_dataset`: the scaled latent means, `minidiff.autoencoder.encode_latents`), and
trains the usual ContextUnet on them at the latent shape; nothing is encoded per step. Its
checkpoint's config then holds `config["autoencoder"]`:

| key            | what                                                                  |
|----------------|-----------------------------------------------------------------------|
| `run`          | the autoencoder's run folder, absolute                                |
| `sha256`       | `minidiff.autoencoder.fingerprint` of its weights (scale factor too)  |
| `scale_factor` | the latents' 1 / std, as trained on                                   |
| `image_shape`  | (C, H, W) of the images it decodes to                                 |
| `latent_shape` | (c, h, w) of the latents the diffusion network sees                   |

`autoencoder_of(config, path)` finds that folder again (where it was, else a folder of the same
name beside the diffusion run, as when both were moved together), checks the fingerprint, and
returns the autoencoder that decodes the run's samples: `minidiff.load`, `sample`, `eval` and
`--fused` need nothing else. A folder gone, or an autoencoder retrained since, is one line.

Tutorial: tutorials/09_latent_diffusion.py.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from minidiff.autoencoder import Autoencoder, encode_latents, fingerprint
from minidiff.autoencoder_config import AUTOENCODER_KIND, NETWORK_FIELDS
from minidiff.data.datasets import Dataset
from minidiff.training.checkpoint import (CHECKPOINT_NAME, _check_plain, _check_weights,
                                          _malformed, _mismatch, load_checkpoint,
                                          resolve_checkpoint)
from minidiff.utils.errors import MinidiffError


def autoencoder_path(run_or_ckpt: str | os.PathLike) -> Path:
    """The checkpoint of an autoencoder run folder (or the file itself), found as every run's is
    (`resolve_checkpoint`); one line naming --autoencoder if none."""
    try:
        return resolve_checkpoint(Path(run_or_ckpt))  # a path, never "the newest run"
    except MinidiffError:
        raise MinidiffError(f"--autoencoder {run_or_ckpt}: no {CHECKPOINT_NAME} there; pass the "
                            "folder of a finished 'python -m minidiff train-autoencoder' "
                            "run") from None


def load_autoencoder(run_or_ckpt, device="cpu") -> tuple[Autoencoder, dict, Path]:
    """(the autoencoder in eval mode, its checkpoint, the checkpoint's path), every part checked
    before anything is built from it."""
    path = autoencoder_path(run_or_ckpt)
    state = load_checkpoint(path, map_location="cpu", kind=AUTOENCODER_KIND)
    config = state.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("network"), dict):
        raise _malformed(path, "its config has no network settings")
    _check_plain(config, path)
    network = config["network"]
    names = {"in_channels", *NETWORK_FIELDS}
    if set(network) != names or not all(isinstance(v, int) and not isinstance(v, bool)
                                        and 1 <= v <= 4096 for v in network.values()):
        raise _mismatch(path, f"its network settings are {str(network)[:80]}")
    try:
        with torch.device("meta"):
            expected = {name: (tuple(t.shape), t.dtype)
                        for name, t in Autoencoder(**network).state_dict().items()}
    except (ValueError, RuntimeError) as error:
        raise _mismatch(path, str(error).splitlines()[0][:80]) from None
    _check_weights(state.get("model"), expected, "its weights", path)
    model = Autoencoder(**network)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state, path


def autoencoder_image_size(run_or_ckpt) -> int:
    """The image side an autoencoder run was trained at (`train --autoencoder` defaults to it)."""
    _, state, _ = load_autoencoder(run_or_ckpt)
    return int(state["config"]["image_size"])


@dataclasses.dataclass
class Latents:
    """The autoencoder a diffusion run trains on, and the record its checkpoint keeps."""

    model: Autoencoder
    record: dict

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        from minidiff.autoencoder import decode_latents

        return decode_latents(self.model, z.to(self.model.scale_factor.device))


def encode_dataset(dataset: Dataset, run_or_ckpt, device) -> tuple[Dataset, Latents]:
    """`dataset` with its images replaced by their scaled latents (encoded once, here), and the
    autoencoder that decodes them."""
    model, state, path = load_autoencoder(run_or_ckpt, device)
    size = int(state["config"]["image_size"])
    if tuple(dataset.images.shape[1:]) != (model.in_channels, size, size):
        raise MinidiffError(f"--autoencoder {run_or_ckpt} was trained on {size} px images with "
                            f"{model.in_channels} channels, but the data is "
                            f"{tuple(dataset.images.shape[1:])}: pass --image-size {size}")
    z = encode_latents(model, dataset.images.to(device)).cpu()
    record = {"run": str(path.parent.resolve()), "sha256": fingerprint(model.state_dict()),
              "scale_factor": float(model.scale_factor), "image_shape": [model.in_channels,
                                                                          size, size],
              "latent_shape": list(z.shape[1:])}
    latent = Dataset(images=z, contexts=dataset.contexts, classes=dataset.classes,
                     name=dataset.name)
    return latent, Latents(model, record)


def autoencoder_of(config: dict, run_path: Path, device="cpu") -> Latents | None:
    """The autoencoder that decodes a diffusion run's samples (None for a pixel-space run),
    checked against the fingerprint the run recorded; one line if it is gone or was retrained."""
    record = config.get("autoencoder")
    if record is None:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("run"), str):
        raise MinidiffError(f"{run_path}: its autoencoder record is not laid out as minidiff "
                            "writes it; train the diffusion model again")
    recorded = Path(record["run"])
    run_folder = run_path.parent if run_path.is_file() else run_path
    found = next((p for p in (recorded, run_folder.parent / recorded.name)
                  if (p / CHECKPOINT_NAME).is_file()), None)
    if found is None:
        raise MinidiffError(f"{run_path} decodes its latents with the autoencoder {recorded}, "
                            f"which is gone (no {CHECKPOINT_NAME} there or beside the run); "
                            "restore that folder, or train the diffusion model again on another")
    model, _, _ = load_autoencoder(found, device)
    if fingerprint(model.state_dict()) != record.get("sha256"):
        raise MinidiffError(f"the autoencoder {found} was retrained after {run_folder} was "
                            "trained on its latents (its weights' fingerprint changed), so the "
                            "samples would decode wrongly; restore it, or train the diffusion "
                            "model again with --autoencoder " + str(found))
    return Latents(model, record)

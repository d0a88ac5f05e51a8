"""The feature network every FID in minidiff is measured in: `SpriteClassifier`, trained once
per dataset and cached.

The usual FID features (Inception-v3, trained on 299x299 photographs) mean little on 16x16 sprites
and need a download, so minidiff uses the penultimate layer of a small classifier trained on the
very dataset being modelled. It is trained on first use, cached per `dataset_hash` (and the
config's hash) in the user cache folder (`cache_dir`), and its accuracy on held-out real images is
reported beside every number it yields. Its FIDs are comparable with each other for one dataset,
not with published Inception FIDs.

Used by `minidiff.evaluation.metrics` (FID, conditional accuracy, diversity) and
`minidiff.evaluation.held_out`; `split` is also the autoencoder's held-out split.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from minidiff.checkpoint import load_checkpoint, save_checkpoint
from minidiff.data.datasets import Dataset, dataset_hash
from minidiff.utils.errors import MinidiffError

CLASSIFIER_KIND = "feature-classifier"  # the `kind` of a cached classifier's checkpoint


# The defaults: held-out accuracy against steps, smoothing, shifts and width, in
# benchmarks/RESULTS.md ("The feature classifier").
@dataclass
class ClassifierConfig:
    n_feat: int = 16  # channels at 16x16; 2x and 4x at 8x8 and 4x4 (features: 4 * n_feat = 64)
    steps: int = 2000  # Adam steps, whatever the dataset's size (about 2 CPU-minutes, RESULTS.md)
    batch_size: int = 128
    lr: float = 2e-3
    label_smoothing: float = 0.1  # cross-entropy against 0.9 one-hot + 0.1 uniform
    shift: int = 1  # move each training image by up to this many pixels (white fill)
    holdout: float = 0.1  # share of the dataset kept out of training to measure accuracy
    seed: int = 0


class SpriteClassifier(nn.Module):
    """Three conv stages (16 -> 8 -> 4 pixels), global average pool, linear: features + logits."""

    def __init__(self, in_channels: int, n_classes: int, n_feat: int = 16):
        super().__init__()
        widths = (n_feat, 2 * n_feat, 4 * n_feat)
        layers, previous = [], in_channels
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2  # halve the resolution at stages 2 and 3
            layers += [nn.Conv2d(previous, width, 3, stride, 1), nn.GroupNorm(8, width), nn.SiLU(),
                       nn.Conv2d(width, width, 3, 1, 1), nn.GroupNorm(8, width), nn.SiLU()]
            previous = width
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(previous, max(n_classes, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [-1, 1] -> (N, 4 * n_feat): the space FID is measured in."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def split(dataset: Dataset, holdout: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held_out) of a seeded random split."""
    order = np.random.default_rng(seed).permutation(len(dataset))
    n_held = max(1, round(holdout * len(dataset)))
    return order[n_held:], order[:n_held]


def train_classifier(dataset: Dataset, config: ClassifierConfig | None = None):
    """Train a SpriteClassifier on the dataset's labels; returns (model, held-out accuracy)."""
    config = config or ClassifierConfig()
    if dataset.contexts.shape[1] == 0:
        raise MinidiffError(f"dataset {dataset.name!r} has no labels: the feature classifier "
                            "needs classes (pass --labels, or a folder with class subfolders)")
    torch.manual_seed(config.seed)
    train_idx, held_idx = split(dataset, config.holdout, config.seed)
    images, labels = dataset.images, dataset.contexts.argmax(1)
    model = SpriteClassifier(images.shape[1], dataset.contexts.shape[1], config.n_feat)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    lr_at = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.steps)
    generator = torch.Generator().manual_seed(config.seed)
    train_idx = torch.from_numpy(train_idx)
    model.train()
    for _ in range(config.steps):
        batch = train_idx[torch.randint(len(train_idx), (config.batch_size,), generator=generator)]
        x = images[batch]
        flip = torch.rand(len(x), generator=generator) < 0.5  # mirror half: more data for free
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if config.shift:
            x = shift(x, config.shift, generator)
        loss = nn.functional.cross_entropy(model(x), labels[batch],
                                           label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr_at.step()
    model.eval()
    held = torch.from_numpy(held_idx)
    return model, classify_accuracy(model, images[held], labels[held])


def shift(x: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Each image (N, C, H, W) moved by a random whole number of pixels in [-pixels, pixels]
    along each axis, the uncovered border white (the background of the course's sprites)."""
    n, c, h, w = x.shape
    padded = nn.functional.pad(x, (pixels,) * 4, value=1.0)
    dy, dx = (torch.randint(0, 2 * pixels + 1, (n, 1), generator=generator) for _ in range(2))
    rows, cols = dy + torch.arange(h), dx + torch.arange(w)  # (N, H), (N, W)
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


@torch.inference_mode()
def classify(model: SpriteClassifier, images: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """Predicted class of each image (N,)."""
    return torch.cat([model(images[i:i + batch]).argmax(1) for i in range(0, len(images), batch)])


@torch.inference_mode()
def features(model: SpriteClassifier, images: torch.Tensor, batch: int = 1000) -> np.ndarray:
    """(N, D) float64 features of images in [-1, 1]."""
    parts = [model.features(images[i:i + batch]) for i in range(0, len(images), batch)]
    return torch.cat(parts).double().numpy()


def classify_accuracy(model, images, labels) -> float:
    return float((classify(model, images) == labels).float().mean())


def cache_dir() -> Path:
    """$MINIDIFF_CACHE, else $XDG_CACHE_HOME/minidiff, else ~/.cache/minidiff."""
    if os.environ.get("MINIDIFF_CACHE"):
        return Path(os.environ["MINIDIFF_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "minidiff"


def cached_classifier(dataset: Dataset, config: ClassifierConfig | None = None,
                      cache: Path | None = None):
    """(model, info) for the dataset, trained on first use and then read from the cache.

    info: {"accuracy": held-out accuracy, "path": cache file, "trained": True if trained now,
    "seconds": training time, "rebuilt": why the cached file was unusable, or None}. The file name
    holds hashes of the dataset's content and the config. A cached file that is torn, corrupt or
    does not fit is a cache miss: the classifier is trained again and the file replaced.
    """
    config = config or ClassifierConfig()
    recipe = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:8]
    key = f"{dataset_hash(dataset)}-{recipe}"
    path = (cache or cache_dir()) / f"classifier-{key}.pt"
    n_classes, channels = dataset.contexts.shape[1], dataset.images.shape[1]
    rebuilt = None
    if path.is_file():
        try:
            model, accuracy = _read_cached(path, SpriteClassifier(channels, n_classes,
                                                                  config.n_feat))
            return model, {"accuracy": accuracy, "path": str(path), "trained": False,
                           "seconds": 0.0, "rebuilt": None}
        except MinidiffError as error:  # torn, foreign or not this network's
            rebuilt = str(error)
    start = time.perf_counter()
    model, accuracy = train_classifier(dataset, config)
    try:
        save_checkpoint(path, {"kind": CLASSIFIER_KIND, "config": asdict(config),
                               "model": model.state_dict(), "accuracy": accuracy})
    except OSError as error:
        raise MinidiffError(f"cannot write the classifier cache {path} ({error.strerror}); set "
                            "MINIDIFF_CACHE to a writable folder") from None
    return model, {"accuracy": accuracy, "path": str(path), "trained": True,
                   "seconds": time.perf_counter() - start, "rebuilt": rebuilt}


def _read_cached(path: Path, model: SpriteClassifier) -> tuple[SpriteClassifier, float]:
    """The cached weights loaded into `model`; any damage raises (the caller retrains)."""
    state = load_checkpoint(path, kind=CLASSIFIER_KIND)
    accuracy = state.get("accuracy")
    if not isinstance(accuracy, float) or not 0 <= accuracy <= 1:
        raise MinidiffError(f"{path} holds accuracy {accuracy!r}, not a share")
    try:
        model.load_state_dict(state.get("model"))
    except (KeyError, TypeError, AttributeError, RuntimeError) as error:
        raise MinidiffError(f"{path} holds weights for another classifier "
                            f"({type(error).__name__})") from None
    return model.eval(), accuracy



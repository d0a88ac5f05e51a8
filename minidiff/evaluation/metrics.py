"""Measuring samples: FID, conditional accuracy, memorisation and speed.

FID (Heusel et al. 2017) is the Fréchet distance between two Gaussians fitted to features of real
and generated images:

    FID = ||mu_r - mu_g||^2 + tr(Sigma_r + Sigma_g - 2 (Sigma_r^1/2 Sigma_g Sigma_r^1/2)^1/2)

The usual features (Inception-v3, trained on 299x299 photographs) mean little on 16x16 sprites and
need a download, so minidiff uses the penultimate layer of a small classifier trained on the very
dataset being modelled (`SpriteClassifier`): trained once, cached per `dataset_hash` in the user
cache folder, its accuracy on held-out real images reported beside every number it yields. Its
FIDs are comparable with each other for one dataset, not with published Inception FIDs. FID also
depends on the number of images, so `evaluate` compares n samples and n held-out real images
against the same n real reference images: the *noise floor* FID(real, real) is what a perfect
sampler would score.

Memorisation: a sample is a near copy when its nearest training image (pixel L2) is within
`NEAR_COPY_RMS` = 8/255 root-mean-square per channel value. Why 8/255: on a 16x16 sprite that
is two pixels changed completely (or every value moved by 8 of 255 grey levels), a difference one
does not notice at a glance, yet far above the 1-level rounding of a true copy. Real data has
near-duplicates of its own (measured: 10% of the built-in sprites lie within 4/255 of another, 5%
of the rltiles items are exact repeats), so `evaluate` scores real images the same way and reports
that base rate beside the samples' rate: only an excess over it suggests memorisation.
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

from minidiff.training.checkpoint import load_checkpoint, save_checkpoint
from minidiff.data.datasets import Dataset, dataset_hash
from minidiff.utils.errors import MinidiffError

NEAR_COPY_RMS = 8 / 255 * 2  # 8 grey levels of 255, in the model's [-1, 1] units
CLASSIFIER_KIND = "feature-classifier"  # the `kind` of a cached classifier's checkpoint


# %% The feature network


@dataclass
class ClassifierConfig:
    n_feat: int = 16  # channels at 16x16; 2x and 4x at 8x8 and 4x4 (features: 4 * n_feat = 64)
    steps: int = 1000  # Adam steps, whatever the dataset's size (about 2 minutes on 1 CPU core)
    batch_size: int = 128
    lr: float = 2e-3
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
        loss = nn.functional.cross_entropy(model(x), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr_at.step()
    model.eval()
    held = torch.from_numpy(held_idx)
    return model, classify_accuracy(model, images[held], labels[held])


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


# %% Distances


def gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (N, D), in float64."""
    feats = np.asarray(feats, dtype=np.float64)
    if len(feats) < 2:
        raise MinidiffError(f"FID needs at least 2 images per set, got {len(feats)}")
    return feats.mean(0), np.cov(feats, rowvar=False).reshape(feats.shape[1], feats.shape[1])


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), the Fréchet distance between
    N(mu1, S1) and N(mu2, S2) (Dowson & Landau 1982). tr((S1 S2)^1/2) is computed through the
    symmetric S1^1/2 S2 S1^1/2, which has the same eigenvalues and stays real."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    root1 = _sqrt_psd(sigma1)
    cross = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    trace_sqrt = np.sqrt(np.clip(cross, 0, None)).sum()
    distance = ((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt
    return float(max(distance, 0.0))


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of features."""
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b))


def nearest_rms(images: torch.Tensor, reference: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """RMS pixel distance from each image to its nearest reference image, in [-1, 1] units."""
    flat_ref = reference.reshape(len(reference), -1).float()
    ref_sq = (flat_ref**2).sum(1)
    nearest = []
    for i in range(0, len(images), batch):
        flat = images[i:i + batch].reshape(-1, flat_ref.shape[1]).float()
        d2 = (flat**2).sum(1, keepdim=True) - 2 * flat @ flat_ref.T + ref_sq  # ||a - b||^2
        nearest.append(d2.min(1).values.clamp_min(0))
    return (torch.cat(nearest) / flat_ref.shape[1]).sqrt()


def memorisation(images: torch.Tensor, training: torch.Tensor,
                 threshold: float = NEAR_COPY_RMS) -> float:
    """Share of images within `threshold` RMS of some training image (see the module docstring)."""
    return float((nearest_rms(images, training) <= threshold).float().mean())


def conditional_accuracy(classifier, images: torch.Tensor, contexts: torch.Tensor) -> float:
    """Share of class-conditioned samples the classifier assigns to the class asked for."""
    return classify_accuracy(classifier, images, contexts.argmax(1).to(images.device))


# %% One evaluation


def evaluate(pipe, dataset: Dataset, sampler, n: int = 1000, seed: int = 0,
             classifier=None, classifier_info: dict | None = None) -> dict:
    """Sample n images with `sampler` (a SamplerConfig) and measure them against `dataset`.

    Two disjoint random sets of m = min(n, N // 2) real images: A is the reference, B plays a
    perfect sampler (the noise floor). Samples are conditioned on the classes of A's images (cycled
    when n > m), so their class mix is the data's. Returns plain numbers, ready for JSON.
    """
    if classifier is None:
        classifier, classifier_info = cached_classifier(dataset)
    if n < 2:
        raise MinidiffError(f"n={n}: FID needs at least 2 samples")
    m = min(n, len(dataset) // 2)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(dataset)))
    ref, floor = order[:m], order[m:2 * m]
    conditional = pipe.n_cfeat > 0 and dataset.contexts.shape[1] > 0
    if conditional and pipe.classes and list(pipe.classes) != list(dataset.classes):
        raise MinidiffError(f"the run's classes ({', '.join(pipe.classes)}) are not the data's "
                            f"({', '.join(dataset.classes)}): evaluate on the data it was "
                            "trained on")
    if sampler.guidance is not None and not conditional:
        raise MinidiffError("guidance needs a conditional run and labelled data")
    mix = dataset.contexts[ref] if conditional else None
    start = time.perf_counter()
    samples = pipe.sample(n, sampler.sampler, sampler.steps, sampler.eta, mix=mix,
                          guidance=sampler.guidance if conditional else None, seed=seed,
                          fused=sampler.fused, spacing=sampler.spacing,
                          guidance_interval=sampler.guidance_interval if conditional else None).cpu()
    seconds = time.perf_counter() - start
    contexts = pipe.contexts(n, mix=mix).cpu() if conditional else None
    real_feats = features(classifier, dataset.images[ref])
    rest = torch.ones(len(dataset), dtype=torch.bool)
    rest[floor] = False
    return {
        "n_samples": n, "n_real": m, "seed": seed, "sampling_seconds": seconds,
        "samples_per_second": n / seconds,
        "fid": fid(features(classifier, samples[:m]), real_feats),
        "fid_noise_floor": fid(features(classifier, dataset.images[floor]), real_feats),
        "conditional_accuracy": (conditional_accuracy(classifier, samples, contexts)
                                 if conditional else None),
        "memorisation": memorisation(samples, dataset.images),
        "memorisation_real": memorisation(dataset.images[floor], dataset.images[rest]),
        "near_copy_rms": NEAR_COPY_RMS,
        "classifier_accuracy": (classifier_info or {}).get("accuracy"),
        "classifier_path": (classifier_info or {}).get("path"),
        "dataset": dataset.name, "dataset_hash": dataset_hash(dataset),
    }

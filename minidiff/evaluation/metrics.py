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

Diversity per class (`class_diversity`): for each class, the mean pairwise feature distance among
the samples of that class over the same among real images of that class. 1.0 is as varied as
real; well below 1 means the samples collapse onto a few prototypes, which FID sees only as a
vague rise and conditional accuracy rewards.

Two instruments: `evaluate` measures a run against the data it was trained on (what `python -m
minidiff eval` prints); `evaluate_held_out` measures it against images it never saw (issue 11,
`benchmarks/train_quality.py`): the samples' FID against the whole held-out set, its floor the
FID of as many *training* images (draws from the data distribution, as a perfect sampler's are),
over several sample seeds.
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
HELD_OUT_STREAM = 11  # `split_dataset` draws from rng([seed, 11]): never the classifier's split


# %% The feature network


# Held-out accuracy (10% of the data), measured on one busy core, CPU seconds in brackets:
#                              emoji_google (1,906)   rltiles_items (1,016)
#   1000 steps (the old default)     0.618 (72 s wall)      0.677 (79)
#   2000 steps, smoothing, shift 1   0.665 (135), 0.649*    0.716 (144)*
#   the same, shift 2                0.670 (131)*
#   the same, shift 1, n_feat 24     0.665 (237)
#   3000 steps, smoothing, shift 1   0.675 (202)
# (* this code; the others a prototype of it with another random stream.) Width buys nothing;
# steps with smoothing and shifts buy 0.03-0.05 on both sets (each about one standard error of
# the 191 and 102 held-out images), so the default is the 2000-step row.
@dataclass
class ClassifierConfig:
    n_feat: int = 16  # channels at 16x16; 2x and 4x at 8x8 and 4x4 (features: 4 * n_feat = 64)
    steps: int = 2000  # Adam steps, whatever the dataset's size (about 2 CPU-minutes, table above)
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


# %% Diversity


def mean_pairwise_distance(feats: np.ndarray) -> float | None:
    """Mean Euclidean distance over the pairs i < j of the rows of `feats` (k, D); None if k < 2."""
    if len(feats) < 2:
        return None
    feats = torch.from_numpy(np.asarray(feats, dtype=np.float64))
    return float(torch.pdist(feats).mean())


def class_diversity(feats: np.ndarray, labels: torch.Tensor, real_feats: np.ndarray,
                    real_labels: torch.Tensor, classes: list[str]) -> dict:
    """{class name: mean pairwise distance among its samples / the same among its real images}
    (module docstring); None for a class with fewer than 2 images on either side."""
    labels, real_labels = np.asarray(labels), np.asarray(real_labels)
    names = classes or [f"class{i}" for i in range(int(max(labels.max(), real_labels.max())) + 1)]
    ratios = {}
    for i, name in enumerate(names):
        spread = mean_pairwise_distance(feats[labels == i])
        real = mean_pairwise_distance(real_feats[real_labels == i])
        ratios[name] = spread / real if spread is not None and real else None
    return ratios


def mean_of(values) -> float | None:
    """Mean of the numbers among `values` (None skipped); None if there are none."""
    numbers = [v for v in values if v is not None]
    return float(np.mean(numbers)) if numbers else None


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
    conditional = check_run_fits(pipe, dataset, sampler)
    m = min(n, len(dataset) // 2)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(dataset)))
    ref, floor = order[:m], order[m:2 * m]
    mix = dataset.contexts[ref] if conditional else None
    samples, seconds = sample_like(pipe, sampler, n, mix, seed)
    contexts = pipe.contexts(n, mix=mix).cpu() if conditional else None
    real_feats, floor_feats = (features(classifier, dataset.images[rows]) for rows in (ref, floor))
    sample_feats = features(classifier, samples)
    labels = dataset.contexts.argmax(1)
    asked = contexts.argmax(1) if conditional else classify(classifier, samples)
    rest = torch.ones(len(dataset), dtype=torch.bool)
    rest[floor] = False
    diversity = class_diversity(sample_feats, asked, real_feats, labels[ref], dataset.classes)
    return {
        "n_samples": n, "n_real": m, "seed": seed, "sampling_seconds": seconds,
        "samples_per_second": n / seconds,
        "fid": fid(sample_feats[:m], real_feats),
        "fid_noise_floor": fid(floor_feats, real_feats),
        "conditional_accuracy": (conditional_accuracy(classifier, samples, contexts)
                                 if conditional else None),
        "memorisation": memorisation(samples, dataset.images),
        "memorisation_real": memorisation(dataset.images[floor], dataset.images[rest]),
        "near_copy_rms": NEAR_COPY_RMS,
        "diversity_per_class": diversity, "diversity": mean_of(diversity.values()),
        "diversity_floor": mean_of(class_diversity(floor_feats, labels[floor], real_feats,
                                                   labels[ref], dataset.classes).values()),
        "classifier_accuracy": (classifier_info or {}).get("accuracy"),
        "classifier_path": (classifier_info or {}).get("path"),
        "dataset": dataset.name, "dataset_hash": dataset_hash(dataset),
    }


def check_run_fits(pipe, dataset: Dataset, sampler) -> bool:
    """Whether the samples are class-conditioned; refuses data with other classes than the run's
    and guidance without classes."""
    conditional = pipe.n_cfeat > 0 and dataset.contexts.shape[1] > 0
    if conditional and pipe.classes and list(pipe.classes) != list(dataset.classes):
        raise MinidiffError(f"the run's classes ({', '.join(pipe.classes)}) are not the data's "
                            f"({', '.join(dataset.classes)}): evaluate on the data it was "
                            "trained on")
    if sampler.guidance is not None and not conditional:
        raise MinidiffError("guidance needs a conditional run and labelled data")
    return conditional


def sample_like(pipe, sampler, n: int, mix: torch.Tensor | None, seed: int):
    """(n samples on the CPU, seconds taken), conditioned on the rows of `mix` (None: no class)."""
    start = time.perf_counter()
    guided = sampler.guidance if mix is not None else None
    samples = pipe.sample(n, sampler.sampler, sampler.steps, sampler.eta, mix=mix,
                          guidance=guided, seed=seed, fused=sampler.fused,
                          spacing=sampler.spacing,
                          guidance_interval=sampler.guidance_interval if guided else None)
    return samples.cpu(), time.perf_counter() - start


# %% Against held-out images (issue 11)


def split_dataset(dataset: Dataset, holdout: float, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(train, held_out) Datasets of a seeded random split, rows in their file order.

    Drawn apart from the classifier's own split (`split`): with the same permutation, the images
    the classifier never saw would all be held out, where its features spread wider (emoji:
    training images looked 0.6-0.8 times as varied as held-out ones of their class)."""
    order = np.random.default_rng([seed, HELD_OUT_STREAM]).permutation(len(dataset))
    n_held = max(1, round(holdout * len(dataset)))
    parts = (np.sort(order[n_held:]), np.sort(order[:n_held]))
    return tuple(Dataset(dataset.images[torch.from_numpy(rows)],
                         dataset.contexts[torch.from_numpy(rows)], dataset.classes, dataset.name)
                 for rows in parts)


def evaluate_held_out(pipe, train: Dataset, held_out: Dataset, sampler, n: int = 1000,
                      seeds=(0, 1, 2), classifier=None,
                      classifier_info: dict | None = None) -> dict:
    """Measure a run trained on `train` against `held_out` images it never saw, over `seeds`.

    For each seed: m = min(n, len(train)) random training images (drawn with that seed) play a
    perfect sampler, and m samples are conditioned on their classes, so both have the data's class
    mix and the same m. Both are compared with the whole held-out set H: FID(samples, H) and the
    floor FID(training images, H). Memorisation and the median nearest-training-image RMS are
    measured for the samples and, as the real base rate, for H. The classifier defaults to the
    cached one of train + held_out. Returns plain numbers (`summarise`'s `_each`, `_mean`, `_min`).
    """
    if classifier is None:
        whole = Dataset(torch.cat([train.images, held_out.images]),
                        torch.cat([train.contexts, held_out.contexts]), train.classes, train.name)
        classifier, classifier_info = cached_classifier(whole)
    n = min(n, len(train))
    if n < 2 or len(held_out) < 2:
        raise MinidiffError(f"FID needs at least 2 samples and 2 held-out images, got n={n} "
                            f"and {len(held_out)} held out")
    conditional = check_run_fits(pipe, train, sampler)
    held = (features(classifier, held_out.images), held_out.contexts.argmax(1))
    rows = [_held_out_seed(pipe, train, sampler, n, seed, classifier, held, conditional)
            for seed in seeds]
    rms_real = nearest_rms(held_out.images, train.images)
    seconds = sum(row.pop("sampling_seconds") for row in rows)
    return {
        "n_samples": n, "n_train": len(train), "n_held_out": len(held_out), "seeds": list(seeds),
        **summarise(rows),
        "memorisation_real": float((rms_real <= NEAR_COPY_RMS).float().mean()),
        "nearest_rms_median_real": float(rms_real.median()), "near_copy_rms": NEAR_COPY_RMS,
        "sampling_seconds": seconds, "samples_per_second": n * len(rows) / seconds,
        "classifier_accuracy": (classifier_info or {}).get("accuracy"),
        "classifier_path": (classifier_info or {}).get("path"),
        "dataset": train.name, "train_hash": dataset_hash(train),
        "held_out_hash": dataset_hash(held_out),
    }


def _held_out_seed(pipe, train: Dataset, sampler, n: int, seed: int, classifier, held,
                   conditional: bool) -> dict:
    """One seed of `evaluate_held_out`: its samples and training images against H."""
    held_feats, held_labels = held
    rows = torch.from_numpy(np.random.default_rng(seed).permutation(len(train))[:n])
    mix = train.contexts[rows] if conditional else None
    samples, seconds = sample_like(pipe, sampler, n, mix, seed)
    sample_feats = features(classifier, samples)
    real_feats = features(classifier, train.images[rows])
    asked = mix.argmax(1) if conditional else classify(classifier, samples)
    rms = nearest_rms(samples, train.images)
    classes = train.classes
    return {
        "fid": fid(sample_feats, held_feats), "fid_floor": fid(real_feats, held_feats),
        "conditional_accuracy": (conditional_accuracy(classifier, samples, mix)
                                 if conditional else None),
        "memorisation": float((rms <= NEAR_COPY_RMS).float().mean()),
        "nearest_rms_median": float(rms.median()),
        "diversity": class_diversity(sample_feats, asked, held_feats, held_labels, classes),
        "diversity_floor": class_diversity(real_feats, train.contexts[rows].argmax(1),
                                           held_feats, held_labels, classes),
        "sampling_seconds": seconds,
    }


def summarise(rows: list[dict]) -> dict:
    """Per-seed results as `<key>_each` (a list) and `<key>_mean`, plus `fid_min` and
    `fid_floor_min`. A per-class dict (diversity) becomes `<key>_per_class` (each class's mean
    over seeds) and `<key>_mean` (the mean over classes); None (no classes) stays None."""
    summary = {}
    for key in rows[0]:
        values = [row[key] for row in rows]
        if isinstance(values[0], dict):
            per_class = {name: mean_of(v[name] for v in values) for name in values[0]}
            summary |= {f"{key}_per_class": per_class, f"{key}_mean": mean_of(per_class.values()),
                        f"{key}_each": [mean_of(v.values()) for v in values]}
            continue
        summary |= {f"{key}_each": values, f"{key}_mean": mean_of(values)}
        if key.startswith("fid"):
            summary[f"{key}_min"] = min(values)
    return summary

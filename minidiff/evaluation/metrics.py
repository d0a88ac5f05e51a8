"""Measuring samples: FID, conditional accuracy, diversity, texture, memorisation and speed.

FID (Heusel et al. 2017) is the Fréchet distance between two Gaussians fitted to features of real
and generated images:

    FID = ||mu_r - mu_g||^2 + tr(Sigma_r + Sigma_g - 2 (Sigma_r^1/2 Sigma_g Sigma_r^1/2)^1/2)

The features are the penultimate layer of a small classifier trained on the very dataset being
modelled (`minidiff.evaluation.classifier`), not Inception-v3's. FID also
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

Texture (`minidiff.evaluation.texture`): patch SWD, overall and per class, and the
high-frequency ratio, which see blur and speckle that the classifier's features do not; each
beside the same for the floor's real images.

`evaluate` measures a run against the data it was trained on (what `python -m minidiff eval`
prints); `minidiff.evaluation.held_out.evaluate_held_out` measures it against images it never saw.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from minidiff.data.datasets import Dataset, dataset_hash
from minidiff.evaluation.classifier import cached_classifier, classify, classify_accuracy, features
from minidiff.evaluation.texture import texture_measures
from minidiff.utils.errors import MinidiffError

NEAR_COPY_RMS = 8 / 255 * 2  # 8 grey levels of 255, in the model's [-1, 1] units


# ---- Distances ----


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


# ---- Diversity ----


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


# ---- One evaluation ----


def evaluate(pipe, dataset: Dataset, sampler, n: int = 1000, seed: int = 0,
             classifier=None, classifier_info: dict | None = None) -> dict:
    """Sample n images with `sampler` (a SamplerConfig) and measure them against `dataset`.

    Two disjoint random sets of m = min(n, N // 2) real images: A is the reference, B plays a
    perfect sampler (the noise floor). Samples are conditioned on the classes of B's images
    (cycled when n > m), so they and B stand on equal footing: a sampler in A's exact class mix
    scored below the floor, since B's mix differs from A's by chance. Texture (patch SWD,
    the high-frequency ratio) compares the first m samples, and B as its floor, with A.
    Returns plain numbers.
    """
    if classifier is None:
        classifier, classifier_info = cached_classifier(dataset)
    if n < 2:
        raise MinidiffError(f"n={n}: FID needs at least 2 samples")
    conditional = check_run_fits(pipe, dataset, sampler)
    m = min(n, len(dataset) // 2)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(dataset)))
    ref, floor = order[:m], order[m:2 * m]
    mix = dataset.contexts[floor] if conditional else None  # B's class mix, as B's
    samples, seconds = sample_like(pipe, sampler, n, mix, seed)
    contexts = pipe.contexts(n, mix=mix).cpu() if conditional else None
    real_feats, floor_feats = (features(classifier, dataset.images[rows]) for rows in (ref, floor))
    sample_feats = features(classifier, samples)
    labels = dataset.contexts.argmax(1)
    asked = contexts.argmax(1) if conditional else classify(classifier, samples)
    rest = torch.ones(len(dataset), dtype=torch.bool)
    rest[floor] = False
    diversity = class_diversity(sample_feats, asked, real_feats, labels[ref], dataset.classes)
    reference = (dataset.images[ref], labels[ref], dataset.classes)  # texture against A too
    sample_texture = texture_measures(samples[:m], asked[:m], *reference)
    floor_texture = texture_measures(dataset.images[floor], labels[floor], *reference)
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
        **sample_texture, **{f"{key}_floor": value for key, value in floor_texture.items()},
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

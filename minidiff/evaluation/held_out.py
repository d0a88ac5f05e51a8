"""The held-out instrument (issue 11): a run measured against real images it never saw.

`split_dataset` keeps a seeded share of the data out of training; `evaluate_held_out` then compares
the run's samples with that whole held-out set H, over several sample seeds: FID(samples, H)
beside its floor, FID(as many *training* images, H) (draws from the data distribution, as a
perfect sampler's are), conditional accuracy, per-class diversity, memorisation and the median
nearest-training-image RMS, the last two beside the real base rate of H, and texture (patch
SWD overall and its class-mix-weighted mean per class, the high-frequency ratio, each beside the
same for the floor's training images), folded over the seeds by
`minidiff.evaluation.metrics.summarise`. `benchmarks/train_quality.py` and `benchmarks/latent.py`
print it; the measures themselves live in `minidiff.evaluation.metrics`.
"""

from __future__ import annotations

import numpy as np
import torch

from minidiff.data.datasets import Dataset, dataset_hash
from minidiff.evaluation.classifier import cached_classifier, classify, features
from minidiff.evaluation.metrics import (
    NEAR_COPY_RMS,
    check_run_fits,
    class_diversity,
    conditional_accuracy,
    fid,
    nearest_rms,
    sample_like,
    summarise,
)
from minidiff.evaluation.texture import texture_measures
from minidiff.utils.errors import MinidiffError

HELD_OUT_STREAM = 11  # `split_dataset` draws from rng([seed, 11]): never the classifier's split


def split_dataset(dataset: Dataset, holdout: float, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(train, held_out) Datasets of a seeded random split, rows in their file order.

    Drawn apart from the classifier's own split (`minidiff.evaluation.classifier.split`): with
    the same permutation, the images the classifier never saw would all be held out, where its
    features spread wider (emoji: training images looked 0.6-0.8 times as varied as held-out
    ones of their class)."""
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
    held = (features(classifier, held_out.images), held_out.contexts.argmax(1), held_out.images)
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


def floor_rows(train: Dataset, n: int, seed: int) -> torch.Tensor:
    """The min(n, len(train)) training rows seed `seed` draws: the floor's real images, whose
    classes the samples are asked for."""
    return torch.from_numpy(np.random.default_rng(seed).permutation(len(train))[:n])


def _held_out_seed(pipe, train: Dataset, sampler, n: int, seed: int, classifier, held,
                   conditional: bool) -> dict:
    """One seed of `evaluate_held_out`: its samples and training images against H."""
    held_feats, held_labels, held_images = held
    rows = floor_rows(train, n, seed)
    mix = train.contexts[rows] if conditional else None
    samples, seconds = sample_like(pipe, sampler, n, mix, seed)
    sample_feats = features(classifier, samples)
    real_feats = features(classifier, train.images[rows])
    asked = mix.argmax(1) if conditional else classify(classifier, samples)
    rms = nearest_rms(samples, train.images)
    classes = train.classes
    real_labels = train.contexts[rows].argmax(1)
    held_real = (held_images, held_labels, classes)  # texture against H, as FID is
    sample_texture = texture_measures(samples, asked, *held_real)
    floor_texture = texture_measures(train.images[rows], real_labels, *held_real)
    return {
        "fid": fid(sample_feats, held_feats), "fid_floor": fid(real_feats, held_feats),
        "conditional_accuracy": (conditional_accuracy(classifier, samples, mix)
                                 if conditional else None),
        "memorisation": float((rms <= NEAR_COPY_RMS).float().mean()),
        "nearest_rms_median": float(rms.median()),
        "diversity": class_diversity(sample_feats, asked, held_feats, held_labels, classes),
        "diversity_floor": class_diversity(real_feats, real_labels, held_feats, held_labels,
                                           classes),
        "swd": sample_texture["swd"], "swd_floor": floor_texture["swd"],
        "swd_class": sample_texture["swd_class"], "swd_class_floor": floor_texture["swd_class"],
        "hf_ratio": sample_texture["hf_ratio"], "hf_ratio_floor": floor_texture["hf_ratio"],
        "sampling_seconds": seconds,
    }

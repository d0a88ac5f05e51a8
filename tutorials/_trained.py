"""The trained run that chapters 2, 5 and 6 sample from: chapter 4's, one already trained (by the
chapters run the other way, or the README's quick start), or the same run made here.
Also the data it was trained on, the feature classifier `minidiff.evaluation.classifier` measures
with, and one measure of variety the chapters share.

Chapter 4 trains a ContextUnet on the built-in sprites with `tutorial_config()` and leaves the run
folder in OUT. A chapter run on its own calls `trained_run()`, which trains that same run first
if it is not there yet (CI runs the chapters in order in one OUT: chapter 2 trains it, the others
reuse it). Full size it takes a few minutes on 2 CPU
cores. Under MINIDIFF_TUTORIAL_SMALL=1 the run is smaller and shorter, yet long enough for every
chapter's lesson to hold, which the chapters assert. Measured (batch 32, 512 sprites, 50 samples
per scale): with 200 steps at width 8, 16 or 32, or 600 steps at width 8 (seeds 0, 1, 2 each),
guidance left a classifier's accuracy where it was (the samples were not yet sprites; a width of
8 is narrower than the 12 channels of the 2x2 patches the network reads); 500 steps at width 32
took accuracy at scale 4 over scale 0 from 28% to 66% (seed 1) and 22% to 70% (seed 2), 1,000
steps from 16% to 92% (seed 0). Hence 600 steps at width 32: enough for the lessons, not for
convincing sprites.

Under MINIDIFF_TUTORIAL_SMALL=1 importing this module also sets torch to one thread: the small
run's tensors are too small to share out, and on a busy 2-core machine a second thread mostly
waits for the first (measured: a forward pass of the small network went from 94 ms to 3 ms).
"""

import json
from pathlib import Path

import torch

import minidiff
from minidiff.checkpoint import CHECKPOINT_NAME
from minidiff.data.datasets import Dataset, dataset_hash, load_dataset
from minidiff.evaluation.classifier import ClassifierConfig, cached_classifier
from minidiff.evaluation.metrics import nearest_rms
from minidiff.training import TrainConfig, train

from _tutorial import OUT, SMALL, pick

if SMALL:
    torch.set_num_threads(1)

RUN = OUT / pick("run", "run_small")  # different names: a small run is never taken for a full one


def tutorial_config(**overrides) -> TrainConfig:
    """Chapter 4's run: the default recipe (`minidiff/training/config.py`), shortened to fit a
    tutorial."""
    settings = {
        "n_images": pick(20_000, 512),  # built-in sprites drawn
        "n_feat": pick(64, 32),  # the course's width; small: narrower ones (8, 16) learn no classes
        "batch_size": pick(128, 32),
        "steps": pick(1500, 600),  # the default: about 3 minutes on 2 quiet CPU cores
        "sample_every": pick(250, 300),  # a preview grid every so many steps: watch it learn
        "checkpoint_every": 0,  # only at the end
        "log_every": pick(25, 20),
        "progress": False,
        "out": str(RUN),
    }
    return TrainConfig(**{**settings, **overrides})


CLONE = Path(minidiff.__file__).resolve().parents[1]  # the repository, in a clone
ELSEWHERE = [CLONE / "tutorials" / "out" / RUN.name,  # the chapters run as scripts (or, from a
             Path.cwd() / "out" / RUN.name]  # notebook folder: the notebooks' run)
QUICK_START = [Path.cwd() / "runs" / "sprites", CLONE / "runs" / "sprites"]  # README's first run


def trained_run(same_data: str | None = None) -> Path:
    """The run chapters 2, 5 and 6 sample from: OUT's (chapter 4's); else the same run made when
    the chapters ran the other way (as scripts, or as notebooks); else, at full size, the
    learner's quick-start run `runs/sprites` when it trained on the same sprites; else chapter
    4's run, trained now."""
    if (RUN / CHECKPOINT_NAME).is_file():
        return RUN
    same_data = same_data or dataset_hash(load_tutorial_data())  # the hash, if the caller has it
    found = [run for run in ELSEWHERE + ([] if SMALL else QUICK_START)
             if (run / CHECKPOINT_NAME).is_file() and data_hash_of(run) == same_data]
    if found:
        print(f"sampling from the trained run in {found[0]}")
        return found[0]
    print(f"no trained run in {RUN} yet (chapter 4 makes it); training it now")
    train(tutorial_config())
    return RUN


def data_hash_of(run: Path) -> str | None:
    try:
        return json.loads((run / "config.json").read_text())["data"]["hash"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_tutorial_data() -> Dataset:
    c = tutorial_config()
    return load_dataset(c.data, c.labels, c.classes, c.image_size, c.n_images)


def training_data() -> Dataset:
    """The sprites chapter 4's run trained on, loaded as the trainer loads them (checked against
    the data hash the run recorded in its config.json)."""
    dataset = load_tutorial_data()
    same_data = dataset_hash(dataset)
    run = trained_run(same_data)
    if same_data != data_hash_of(run):
        raise RuntimeError(f"{run} was trained on other data than training_data() loads")
    return dataset


def feature_classifier(dataset: Dataset):
    """(classifier, info) for FID and conditional accuracy (`minidiff/evaluation/classifier.py`):
    trained on `dataset` on first use (about 2 minutes at full size) and cached in OUT for later
    chapters."""
    config = ClassifierConfig(steps=pick(ClassifierConfig.steps, 20))
    return cached_classifier(dataset, config, cache=OUT / "classifiers")


def nearest_other(images: torch.Tensor) -> torch.Tensor:
    """RMS pixel distance from each image to the closest *other* image of the batch (small:
    near-repeats), with `minidiff.evaluation.metrics.nearest_rms` against the rest of the batch."""
    rest = [torch.cat((images[:i], images[i + 1 :])) for i in range(len(images))]
    return torch.cat([nearest_rms(images[i : i + 1], rest[i]) for i in range(len(images))])

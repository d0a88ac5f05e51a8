"""Checkpoints: one file per run, written atomically, loaded without executing anything.

A checkpoint is a plain dict saved with `torch.save` and read back with
`torch.load(weights_only=True)`, which only rebuilds tensors and plain Python containers: a file
crafted to run code on load is refused, and the code does not run. Layout:

| key             | what                                                                  |
|-----------------|-----------------------------------------------------------------------|
| `format`        | "minidiff-checkpoint" (anything else is not ours)                     |
| `version`       | layout version, 1                                                     |
| `kind`          | absent for a run; "feature-classifier" for the eval classifier cache  |
| `config`        | the run's configuration as plain types; `config["unet"]` (UnetConfig's|
|                 | fields) and `config["schedule"]` (`kind`, `T`, `beta1`, `beta2`)      |
| `config_sha256` | SHA-256 of `config` as sorted JSON: an edited config is refused       |
| `classes`       | class names in context-vector order ([] for an unconditional model)   |
| `model`         | the network's state_dict                                              |
| `ema`           | the EMA network's state_dict, or None                                 |
| `optimizer`, `step`, `rng`, ...: whatever the trainer needs to resume exactly             |

Every file is checked before anything is built from it: a zip archive of stored (uncompressed)
records no larger than the file, so no header can make the loader allocate more than the file
holds; then the dict's layout, types and sizes; then every weight's name, shape and dtype against
the network the config describes (built on the meta device, which allocates nothing), and that
the weights are finite. Each failure is one `MinidiffError` line naming the file and what to do.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import zipfile
from dataclasses import fields
from pathlib import Path

import torch

from minidiff.data.limits import MAX_IMAGE_SIZE
from minidiff.data.sprites import CLASSES as SPRITE_CLASSES
from minidiff.unet import PREDICTIONS, UnetConfig, build_unet
from minidiff.utils.atomic import atomic_path
from minidiff.utils.errors import MinidiffError

FORMAT = "minidiff-checkpoint"
VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
RUN = "run"  # the `kind` of a training run's checkpoint (stored as no `kind` key)
MAX_CONFIG_NODES = 100_000  # values in a config; a real one has about 100
MAX_T = 1_000_000  # a schedule's T in a file: far above any run (the course's is 500)
RETRAIN = "use another checkpoint or train again"


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Atomically write `state` (plain types and tensors only) as a minidiff checkpoint."""
    state = {"format": FORMAT, "version": VERSION, **state}
    if "config" in state:
        state["config_sha256"] = config_sha256(state["config"])
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def config_sha256(config: dict) -> str:
    """The fingerprint of a config: SHA-256 of its sorted JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=repr).encode()).hexdigest()


def load_checkpoint(path: str | os.PathLike, map_location="cpu", kind: str = RUN,
                    course: bool = False) -> dict:
    """Read a checkpoint of `kind`, refusing anything missing, torn, foreign, edited, not plain
    data, or whose weights do not fit its config (see the module docstring). `course`: a
    state_dict saved by the course's notebook is read too, as `course_checkpoint` lays it out."""
    path = Path(path)
    if not path.is_file():
        raise MinidiffError(f"no checkpoint at {path}: pass a run folder or a {CHECKPOINT_NAME} "
                            "file")
    _check_archive(path)
    state = _unpickle(path, map_location)
    if course and isinstance(state, dict) and "format" not in state and COURSE_KEY in state:
        state = course_checkpoint(state, path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        also = ", nor a state_dict of the course's ContextUnet" if course else ""
        raise MinidiffError(f"{path} is not a minidiff checkpoint (no '{FORMAT}' marker){also}")
    version = state.get("version")
    if not _is_int(version) or version < 1:
        raise malformed(path, f"its layout version is {_show(version)}")
    if version > VERSION:
        raise MinidiffError(f"{path} was written by a newer minidiff (layout {version}); "
                            "upgrade minidiff to read it")
    found = state.get("kind", RUN)
    if found != kind:
        raise MinidiffError(f"{path} is a {_show(found)} file, not a {kind} checkpoint; "
                            f"pass the {'run folder' if kind == RUN else 'right file'}")
    if kind == RUN:
        check_run_state(state, path)
    return state


# ---- The course's own weights ----

COURSE_KEY = "init_conv.conv1.0.weight"  # the first weight of the course's ContextUnet
COURSE_SCHEDULE = {"kind": "linear", "T": 500, "beta1": 1e-4, "beta2": 0.02}  # COURSE.md


def course_checkpoint(weights: dict, path: Path) -> dict:
    """The course's `torch.save(nn_model.state_dict(), "model_31.pth")` as a minidiff checkpoint
    of the "course" network, eps-predicting, on the course's schedule; its size read off the
    weights: in_channels and n_feat from init_conv, n_cfeat from contextembed1, height from up0's
    h/4 x h/4 kernel. The course builds init_conv's 3 -> n_feat shortcut afresh (random) on every
    call, so its file holds none: here it is zero, that random conv's mean."""
    try:
        n_feat, in_channels = weights[COURSE_KEY].shape[:2]
        n_cfeat = weights["contextembed1.model.0.weight"].shape[1]
        height = 4 * weights["up0.0.weight"].shape[-1]
    except (KeyError, AttributeError, ValueError, IndexError) as error:
        raise MinidiffError(f"{path} is not a state_dict of the course's ContextUnet (no usable "
                            f"{error}); pass a minidiff run folder or the course's model_N.pth"
                            ) from None
    unet = {"arch": "course", "in_channels": int(in_channels), "n_feat": int(n_feat),
            "n_cfeat": int(n_cfeat), "height": int(height), "prediction": "eps"}
    expected = _expected_weights(unet, path)
    shortcut = {name: torch.zeros(shape, dtype=dtype) for name, (shape, dtype) in expected.items()
                if name.startswith("init_conv.shortcut.")}
    names = set(weights) | set(shortcut)
    if names != set(expected):
        wrong = sorted(names ^ set(expected))
        raise MinidiffError(f"{path} is not a state_dict of the course's ContextUnet: "
                            f"{len(wrong)} weight names differ, e.g. {wrong[0]!r}; pass a "
                            "minidiff run folder or the course's model_N.pth")
    classes = list(SPRITE_CLASSES) if n_cfeat == len(SPRITE_CLASSES) else [
        str(k) for k in range(n_cfeat)]
    config = {"unet": unet, "schedule": dict(COURSE_SCHEDULE), "course_weights": path.name}
    return {"format": FORMAT, "version": VERSION, "config": config, "classes": classes,
            "model": {**weights, **shortcut}, "ema": None}


def _check_archive(path: Path) -> None:
    """torch.save writes a zip of stored records, each with its CRC-32: refuse anything else, and
    any damaged byte, before torch reads it (torch itself checks no CRC)."""
    with open(path, "rb") as file:
        magic = file.read(4)
    if not magic.startswith(b"PK"):
        if len(magic) < 4:
            raise _corrupt(path, f"it is only {len(magic)} bytes")
        raise MinidiffError(f"{path} is not a minidiff checkpoint (not a torch.save archive); "
                            f"pass a run folder or its {CHECKPOINT_NAME}")
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            for record in archive.infolist():
                if record.compress_type != zipfile.ZIP_STORED or record.file_size > size:
                    raise _corrupt(path, f"record {ascii(record.filename[:60])} is compressed "
                                         "or larger than the file")
            damaged = archive.testzip()  # reads every record and checks its CRC-32
    except MinidiffError:
        raise
    except Exception as error:  # noqa: BLE001 -- zipfile fails in many ways on damaged bytes
        raise _corrupt(path, f"not a readable zip archive: {type(error).__name__}") from None
    if damaged is not None:
        raise _corrupt(path, f"record {ascii(damaged[:60])} fails its CRC-32 check")


def _unpickle(path: Path, map_location):
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        refused = next((line for line in lines if "Unsupported global" in line), None)
        if refused is None:  # torch wraps every failure of its safe unpickler in this error
            raise _corrupt(path, "its pickle does not parse") from None
        raise MinidiffError(
            f"{path} was refused: it holds objects other than tensors and plain data, which could "
            f"run code on load ({refused[:120]}); only load checkpoints written by minidiff"
        ) from None
    except MemoryError:
        raise _corrupt(path, "it claims more memory than exists") from None
    except Exception as error:  # noqa: BLE001 -- a damaged file fails anywhere inside torch.load
        raise _corrupt(path, type(error).__name__) from None


def _corrupt(path: Path, why: str) -> MinidiffError:
    return MinidiffError(f"{path} is truncated or corrupted ({why}); {RETRAIN}")


# The layout of a run's checkpoint


def check_run_state(state: dict, path: Path) -> None:
    """Refuse a run checkpoint whose layout, types, sizes or weights do not hold together."""
    config = state.get("config")
    if not isinstance(config, dict):
        raise malformed(path, f"its config is {_show(config)}, not a dict")
    check_plain(config, path)
    stored = state.get("config_sha256")
    if stored is not None and stored != config_sha256(config):
        raise MinidiffError(f"{path}: its config was edited after training (the fingerprint no "
                            f"longer matches), so the weights may not fit it; restore the "
                            f"original file or train again")
    for name in ("unet", "schedule"):
        if not isinstance(config.get(name), dict):
            raise mismatch(path, f"config[{name!r}] is {_show(config.get(name))}")
    if not isinstance(config.get("train", {}), dict):
        raise malformed(path, f"config['train'] is {_show(config['train'])}, not a dict")
    _check_schedule(config["schedule"], path)
    n_cfeat = _check_unet(config["unet"], path)
    expected = _expected_weights(config["unet"], path)
    trained_at = config.get("train", {}).get("image_size", config["unet"].get("height"))
    latent = config.get("autoencoder")
    if latent is not None:  # latent diffusion: the network sees the autoencoder's latents
        shape = latent.get("latent_shape") if isinstance(latent, dict) else None
        trained_at = shape[-1] if isinstance(shape, list) and shape else None
    if trained_at != config["unet"].get("height", trained_at):
        raise mismatch(path, f"the network is for {config['unet']['height']} px images but the "
                              f"run trained on {_show(trained_at)} px")
    classes = state.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise malformed(path, f"its classes are {_show(classes)}, not a list of names")
    if len(classes) not in (0, n_cfeat):
        raise mismatch(path, f"{len(classes)} class names for a network of {n_cfeat} classes")
    for name in ("model", "ema"):
        if name == "model" or state.get(name) is not None:
            check_weights(state.get(name), expected, f"its {name} weights", path)
    for name in ("step", "ema_updates"):
        if name in state and not (_is_int(state[name]) and state[name] >= 0):
            raise malformed(path, f"{name} is {_show(state[name])}, not a count")
    _check_optimizer(state.get("optimizer", {}), path)


def _check_optimizer(optimizer, path: Path) -> None:
    """A torch optimizer state_dict: groups listing parameter ids, per-id dicts of tensors."""
    groups = optimizer.get("param_groups", []) if isinstance(optimizer, dict) else None
    per_id = optimizer.get("state", {}) if isinstance(optimizer, dict) else None
    ok = isinstance(groups, list) and isinstance(per_id, dict) and all(
        isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups)
    ids = [i for g in groups for i in g["params"]] if ok else []
    known = set(ids)
    ok = ok and all(_is_int(i) and i >= 0 for i in ids) and len(known) == len(ids)
    if not (ok and all(k in known and isinstance(v, dict) for k, v in per_id.items())):
        raise malformed(path, "its optimizer state is not a torch optimizer's state_dict")


def check_plain(config, path: Path) -> None:
    """Plain JSON-like values only, and a bounded number of them (a pickle can share one list
    many times over, which would make walking it, or hashing it, take forever)."""
    stack, seen = [config], 0
    while stack:
        value = stack.pop()
        seen += 1
        if seen > MAX_CONFIG_NODES:
            raise malformed(path, f"its config holds over {MAX_CONFIG_NODES} values")
        if isinstance(value, dict):
            if not all(isinstance(key, str) for key in value):
                raise malformed(path, "its config has a key that is not a string")
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
        elif not (value is None or isinstance(value, (str, bool, int, float))):
            raise malformed(path, f"its config holds a {type(value).__name__}")


def _check_schedule(schedule: dict, path: Path) -> None:
    if set(schedule) != {"kind", "T", "beta1", "beta2"}:
        raise mismatch(path, f"the schedule has keys {sorted(schedule)}, expected kind, T, "
                              "beta1, beta2")
    if not (_is_int(schedule["T"]) and 1 <= schedule["T"] <= MAX_T):
        raise mismatch(path, f"the schedule's T={_show(schedule['T'])} is not 1..{MAX_T}")
    betas = (schedule["beta1"], schedule["beta2"])
    if not all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b)
               for b in betas):
        raise mismatch(path, f"the schedule's betas {_show(betas)} are not finite numbers")


def _check_unet(unet: dict, path: Path) -> int:
    """UnetConfig's fields, each of its type, an image size within MAX_IMAGE_SIZE: n_cfeat."""
    names = {f.name for f in fields(UnetConfig)}
    if not set(unet) <= names:
        raise mismatch(path, f"unknown network settings {sorted(set(unet) - names)}")
    for f in fields(UnetConfig):
        value = unet.get(f.name, f.default)
        wanted = (float, int) if isinstance(f.default, float) else type(f.default)  # str, int
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise mismatch(path, f"the network's {f.name}={_show(value)} is not a "
                                  f"{type(f.default).__name__}")
    if unet.get("prediction", UnetConfig.prediction) not in PREDICTIONS:
        raise mismatch(path, f"the network predicts {_show(unet['prediction'])}, not one of "
                              f"{', '.join(PREDICTIONS)}")
    height = unet.get("height", UnetConfig.height)
    if height > MAX_IMAGE_SIZE:
        raise mismatch(path, f"its image size {height} is over {MAX_IMAGE_SIZE}")
    return unet.get("n_cfeat", UnetConfig.n_cfeat)


def _expected_weights(unet: dict, path: Path) -> dict:
    """{name: (shape, dtype)} of the network `unet` describes, built on the meta device."""
    try:
        with torch.device("meta"):
            model = build_unet(UnetConfig(**unet))
    except MinidiffError as error:  # the network's own rule for its settings
        raise mismatch(path, str(error).split(";")[0]) from None
    return {name: (tuple(t.shape), t.dtype) for name, t in model.state_dict().items()}


def check_weights(weights, expected: dict, what: str, path: Path) -> None:
    if not isinstance(weights, dict) or not all(isinstance(t, torch.Tensor)
                                                for t in weights.values()):
        raise malformed(path, f"{what} are not a state_dict of tensors")
    missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or extra:
        raise mismatch(path, f"{what} lack {missing[:3]} and have unknown {extra[:3]}")
    for name, (shape, dtype) in expected.items():
        tensor = weights[name]
        if tuple(tensor.shape) != shape or tensor.dtype != dtype:
            raise mismatch(path, f"{what} hold {name} as {tuple(tensor.shape)} {tensor.dtype}, "
                                  f"but the config's network needs {shape} {dtype}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise MinidiffError(f"{path}: {what} are not finite ({name} holds NaN or inf: the run "
                                "had diverged); use an earlier checkpoint or train again with a "
                                "lower --lr")


def malformed(path: Path, why: str) -> MinidiffError:
    return MinidiffError(f"{path} is not laid out as minidiff writes checkpoints ({why}); "
                         f"{RETRAIN}")


def mismatch(path: Path, why: str) -> MinidiffError:
    return MinidiffError(f"{path} does not match this minidiff's network or schedule ({why}); "
                         f"{RETRAIN}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value) -> str:
    return repr(value)[:60]


# Finding a run


def resolve_checkpoint(run_or_ckpt: str | os.PathLike | None = None, runs_dir="runs") -> Path:
    """A run folder, a checkpoint file, or None for the newest run under `runs_dir`."""
    if run_or_ckpt is None:
        found = sorted(Path(runs_dir).glob(f"*/{CHECKPOINT_NAME}"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise MinidiffError(
                f"no trained run found: looked for {Path(runs_dir).resolve()}/*/{CHECKPOINT_NAME}; "
                "train one with 'python -m minidiff train' or pass --run/--ckpt"
            )
        return found[-1]
    path = Path(run_or_ckpt)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise MinidiffError(f"no checkpoint at {path}: pass a run folder or a {CHECKPOINT_NAME} "
                            "file")
    return path

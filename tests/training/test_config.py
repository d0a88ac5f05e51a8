"""TrainConfig: one declaration per field, checked the same way from Python and from the CLI;
presets; the learning-rate schedule. (That the module loads no torch: tests/test_imports.py.)"""

import dataclasses
import math

import pytest

from minidiff.cli import build_parser
from minidiff.training import runs
from minidiff.training.config import (
    CORES,
    PRESETS,
    SESSION_FIELDS,
    TrainConfig,
    learning_rate,
    train_config,
    with_preset,
)
from minidiff.utils.errors import MinidiffError
from minidiff.utils.rules import rules


def test_every_field_declares_its_rule_and_help():
    declared = rules(TrainConfig)
    fields = dataclasses.fields(TrainConfig)
    assert set(declared) == {f.name for f in fields}
    assert all(f.metadata["help"] for f in fields)
    assert set(SESSION_FIELDS) <= set(declared)
    assert set(PRESETS["course"]) <= set(declared)


@pytest.mark.parametrize("field, value, flag_text, says", [
    ("steps", 0, "0", "0 is too small: it must be >= 1"),
    ("lr", -1e-3, "-1e-3", "is too small: it must be > 0"),
    ("ema_decay", 1.0, "1", "1 is too large: it must be < 1"),
    ("arch", "resnet", "resnet", "'resnet' is not one of minidiff, course"),
    ("seed", 10**23, "1e23", "is too large: it must be <= 4,294,967,295"),
    ("threads", 100_000, "100000", f"is too large: it must be <= {CORES} (this machine has"),
    ("image_size", 100_000, "100000", "is too large: it must be <= 128"),
    ("timesteps", 2_000_000_000, "2000000000", "is too large: it must be <= 10,000"),
    ("n_images", 1_000_000_000, "1000000000", "is too large: it must be <= 1,000,000"),
    ("minutes", math.nan, "nan", "is not a finite number: it must be > 0"),
])
def test_python_and_the_cli_refuse_with_the_same_rule(field, value, flag_text, says, capsys):
    with pytest.raises(MinidiffError, match="^" + field) as python:
        TrainConfig(**{field: value})
    assert says in str(python.value)
    flag = "--" + field.replace("_", "-")
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["train", f"{flag}={flag_text}"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert f"argument {flag}: " in err and says in err


@pytest.mark.parametrize("overrides, says", [
    ({"steps": 10, "epochs": 2.0}, "both steps and epochs are set"),
    ({"steps": None}, "nothing says how long to train"),
    ({"beta1": 0.5, "beta2": 0.1}, "beta1=0.5 is larger than beta2=0.1"),
    ({"preset": "fast"}, "preset='fast' is not one of course"),
    ({"hflip": 1}, "hflip=1 is not True or False"),
])
def test_rules_that_tie_fields_together(overrides, says):
    with pytest.raises(MinidiffError, match=says):
        TrainConfig(**overrides)


def test_presets_and_resumed_configs_are_checked_too(monkeypatch):
    assert with_preset("course").epochs == 32 and with_preset("course", epochs=1).epochs == 1
    with pytest.raises(MinidiffError, match="preset='nope'"):
        with_preset("nope")
    saved = dataclasses.asdict(TrainConfig(threads=1)) | {"threads": CORES + 8, "gone": 1}
    monkeypatch.setattr(runs, "saved_config", lambda out, kind: saved)
    resumed = train_config({"resume": "runs/x", "steps": 2000})  # --resume runs/x --steps 2000
    assert (resumed.resume, resumed.steps, resumed.threads, resumed.out) == (True, 2000, CORES,
                                                                             "runs/x")
    with pytest.raises(MinidiffError, match="lr=2"):
        train_config({"resume": True, "out": "runs/x", "lr": 2.0})


def test_cosine_schedule_warms_up_then_decays_to_zero():
    config = TrainConfig(warmup_steps=10, lr=1e-3)
    assert learning_rate(config, 0, 100, 10) == pytest.approx(1e-4)
    cosine = 0.5 * (1 + math.cos(0.09 * math.pi))
    assert learning_rate(config, 9, 100, 10) == pytest.approx(1e-3 * cosine)
    assert learning_rate(config, 100, 100, 10) == pytest.approx(0)
    assert learning_rate(config, 50, None, 10) == pytest.approx(1e-3)  # still fitting to --minutes


def test_course_schedule_is_set_at_each_epochs_start():
    config = with_preset("course")
    steps_per_epoch = 894  # 89,400 sprites / 100
    total = 32 * steps_per_epoch
    for epoch in range(32):  # set at each epoch's start, held through the epoch
        for step in (epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch - 1):
            lr = learning_rate(config, step, total, steps_per_epoch)
            assert lr == pytest.approx(1e-3 * (1 - epoch / 32), rel=1e-12)

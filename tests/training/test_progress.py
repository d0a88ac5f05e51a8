"""The one --minutes policy of both trainers (`minidiff.training.progress.Budget`), on a fake
clock: the budget is spent whatever the speed of the first steps or a slowdown mid-run, and the
plain progress lines off a terminal."""

import pytest

from minidiff.training import autoencoder, trainer
from minidiff.training.config import AutoencoderConfig
from minidiff.training.progress import Budget, Progress

from tiny_runs import tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MINUTES = 1


def fake_clock_run(tmp_path, monkeypatch, seconds_of_step, kind="diffusion", **settings):
    """A --minutes 1 run whose step i takes seconds_of_step(i) on a fake clock: (steps, seconds
    the run says it trained, its fitted total)."""
    module, cls = ((trainer, trainer.Trainer) if kind == "diffusion"
                   else (autoencoder, autoencoder.AutoencoderTrainer))
    clock = {"now": 0.0}
    monkeypatch.setattr(cls, "clock", staticmethod(lambda: clock["now"]))
    step = cls.train_step

    def timed_step(self, i):
        clock["now"] += seconds_of_step(i)
        return step(self, i)

    monkeypatch.setattr(cls, "train_step", timed_step)
    if kind == "diffusion":
        config = tiny(tmp_path / "run", steps=None, minutes=MINUTES, checkpoint_every=0,
                      log_every=25, **settings)
        run = module.train(config)
    else:
        run = module.train_autoencoder(AutoencoderConfig(
            n_images=64, n_feat=8, batch_size=8, steps=None, minutes=MINUTES, progress=False,
            checkpoint_every=0, device="cpu", threads=1, out=str(tmp_path / "ae"), **settings))
    return run.step, clock["now"], run.total


@pytest.mark.parametrize("kind", ["diffusion", "autoencoder"])
def test_a_slow_first_step_is_not_timed(tmp_path, monkeypatch, kind):
    """10 s for the first step (torch's warm-up), 1 s after: the loop plans to end at 99% of the
    minute less 1% held for the last save, 58.8 s: 49 steps in 58 s."""
    steps, seconds, total = fake_clock_run(tmp_path, monkeypatch,
                                           lambda i: 10.0 if i == 0 else 1.0, kind)
    assert (steps, seconds, total) == (49, 58.0, 49)


@pytest.mark.parametrize("kind", ["diffusion", "autoencoder"])
def test_slow_first_fifty_steps_do_not_shrink_the_run(tmp_path, monkeypatch, kind):
    """The first 50 steps take 5x longer than the rest: a fit on them alone would stop the run at
    a fifth of its steps; refitted as it goes, the run still spends 95-100% of the budget."""
    steps, seconds, _ = fake_clock_run(tmp_path, monkeypatch,
                                       lambda i: 1.0 if i < 50 else 0.2, kind)
    assert 0.95 * 60 <= seconds <= 60
    assert steps > 50 + (0.95 * 60 - 50) / 0.2 - 1  # the fast steps fill the rest


@pytest.mark.parametrize("kind", ["diffusion", "autoencoder"])
def test_a_machine_that_slows_down_halfway_still_ends_on_time(tmp_path, monkeypatch, kind):
    """From 30 s on every step takes 4x longer: the run neither overruns nor stops early."""
    state = {"t": 0.0}

    def seconds_of_step(i):
        seconds = 0.2 if state["t"] < 30 else 0.8
        state["t"] += seconds
        return seconds

    steps, seconds, _ = fake_clock_run(tmp_path, monkeypatch, seconds_of_step, kind)
    assert 0.95 * 60 <= seconds <= 60
    assert 150 < steps < 150 + 40  # 150 fast steps, then about 37 slow ones


def test_the_budget_reserves_what_a_checkpoint_costs():
    clock = {"now": 0.0}
    budget = Budget(1, clock=lambda: clock["now"])
    for step in range(1, 13):
        clock["now"] += 1.0
        budget.tick(step)
    assert budget.ready() and budget.fitted_total(12) == 12 + int(0.99 * 60 - 0.6 - 12)
    budget.spent(5.0)  # a preview and checkpoint took 5 s: the end will too
    assert budget.fitted_total(12) == 12 + int(0.99 * 60 - 5 - 12)
    clock["now"] = 55.5
    assert budget.over() and not Budget(None).over()


def test_off_a_terminal_progress_prints_a_plain_line_every_30_seconds(capsys):
    clock = {"now": 0.0}
    with Progress(True, 100, clock=lambda: clock["now"]) as bar:
        for step in range(1, 101):
            clock["now"] += 1.0
            bar.update(step, loss=0.5, rate=1.0)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step")]
    assert len(lines) == 3 and lines[0].startswith("step 30 of 100: loss 0.5000, 1.00 steps/s")

"""The trainer: exact resume, determinism, data-parallel ranks, the course preset, divergence,
finished runs, full disks.

Every run here is tiny (n_feat 8, under a hundred built-in sprites, a few steps) so the whole
file stays well under a minute on two CPU cores. The run folder's rules:
tests/training/test_runs.py; bad command-line input: tests/cli/test_train.py.
"""

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import minidiff
from minidiff.checkpoint import load_checkpoint
from minidiff.training import TrainConfig, Trainer, train, with_preset
from minidiff.training import trainer as trainer_module
from minidiff.training.config import PRESETS, train_config
from minidiff.training.progress import Progress
from minidiff.utils.errors import MinidiffError

from tiny_runs import tiny

REPO = Path(__file__).resolve().parents[2]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} of {len(a)} tensors differ, e.g. {different[:3]}"


def final_state(out) -> dict:
    return load_checkpoint(Path(out) / "checkpoint.pt")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """An 8-step run trained straight through: the reference for resume and determinism."""
    out = tmp_path_factory.mktemp("straight") / "run"
    train(tiny(out))
    return final_state(out)


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path, uninterrupted):
    """A crash after step 6 (as SIGKILL would: nothing saved then) loses steps 5-6; resuming from
    the step-4 checkpoint redoes them and ends with bit-identical weights, EMA and optimizer."""

    def crash(step):
        if step == 6:
            raise RuntimeError("simulated crash")

    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated"):
        train(tiny(out), on_step=crash)
    assert final_state(out)["step"] == 4
    train(tiny(out, resume=True))
    resumed = final_state(out)
    assert resumed["step"] == 8
    assert_same_weights(resumed["model"], uninterrupted["model"])
    assert_same_weights(resumed["ema"], uninterrupted["ema"])
    assert_same_weights(_optimizer_tensors(resumed), _optimizer_tensors(uninterrupted))
    steps = [int(line.split('"step": ')[1].split(",")[0])
             for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8], "lines logged after the checkpoint are dropped on resume"


def _optimizer_tensors(state) -> dict:
    return {f"{i}.{k}": v for i, s in state["optimizer"]["state"].items() for k, v in s.items()}


def test_ctrl_c_saves_exits_130_and_resumes_exactly(tmp_path):
    """SIGINT to a real `python -m minidiff train`: it finishes its step, saves, exits 130; the
    resumed run matches an uninterrupted one (constant LR, so the step count can differ)."""
    out = tmp_path / "run"
    flags = ["--n-images", "64", "--n-feat", "8", "--batch-size", "16", "--lr-schedule",
             "constant", "--warmup-steps", "0", "--sample-every", "0", "--checkpoint-every", "3",
             "--no-progress", "--device", "cpu", "--threads", "1"]
    process = subprocess.Popen([sys.executable, "-m", "minidiff", "train", *flags, "--steps",
                                "100000", "--out", str(out)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    stopped = final_state(out)["step"]
    assert 3 <= stopped < 100000
    config = {"n_images": 64, "n_feat": 8, "batch_size": 16, "lr_schedule": "constant",
              "warmup_steps": 0, "sample_every": 0, "checkpoint_every": 3, "progress": False,
              "device": "cpu", "threads": 1}
    train(TrainConfig(**config, steps=stopped + 3, out=str(out), resume=True))
    train(TrainConfig(**config, steps=stopped + 3, out=str(tmp_path / "straight")))
    assert_same_weights(final_state(out)["model"], final_state(tmp_path / "straight")["model"])


def test_same_seed_same_weights_other_seed_other_weights(tmp_path, uninterrupted):
    train(tiny(tmp_path / "again"))
    assert_same_weights(final_state(tmp_path / "again")["model"], uninterrupted["model"])
    train(tiny(tmp_path / "other", seed=1))
    other = final_state(tmp_path / "other")["model"]
    assert not all(torch.equal(other[k], uninterrupted["model"][k]) for k in other)


def test_run_folder_holds_what_sampling_needs(tmp_path):
    out = tmp_path / "run"
    train(tiny(out, steps=4, sample_every=2))
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "metrics.jsonl", "checkpoint.pt", "samples.png",
            "samples_000002.png", "samples_000004.png"} <= names
    trained = minidiff.load(out, device="cpu")  # weights_only load, EMA weights, a fresh network
    assert trained.classes == ["hero", "non-hero", "food", "spell", "side-facing"]
    assert trained.schedule.T == 500 and trained.model.arch == "minidiff"


def test_data_parallel_ranks_agree_with_each_other_and_with_one_process(tmp_path):
    """torchrun with 2 CPU processes (gloo): both ranks end with identical weights, and with the
    weights of one process training on the same global batches (up to float rounding)."""
    script = tmp_path / "ddp.py"
    script.write_text(
        "import sys, torch\n"
        "from minidiff.training import TrainConfig, train\n"
        f"config = TrainConfig(**{_ddp_config()!r}, out=sys.argv[1])\n"
        "trainer = train(config)\n"
        "torch.save(trainer.model.state_dict(), f'{sys.argv[1]}/rank{trainer.env.rank}.pt')\n")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node=2", str(script), str(out)],
                            capture_output=True, text=True, timeout=120, env=env, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    rank0, rank1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert_same_weights(rank0, rank1)
    assert_same_weights(final_state(out)["model"], rank0)  # rank 0 wrote the checkpoint
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2  # written once, not twice
    single = train(TrainConfig(**_ddp_config(), out=str(tmp_path / "single")))
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(rank0[name], value, atol=1e-4, rtol=1e-3, msg=name)


def _ddp_config() -> dict:
    return {"n_images": 64, "n_feat": 8, "batch_size": 16, "steps": 4, "sample_every": 0,
            "checkpoint_every": 0, "log_every": 2, "progress": False, "device": "cpu", "threads": 1,
            "precision": "fp32"}  # bf16 rounds a batch of 8 and one of 16 differently


def test_course_preset_is_the_courses_recipe(tmp_path):
    config = with_preset("course")
    assert (config.timesteps, config.beta1, config.beta2, config.schedule) == (500, 1e-4, 0.02,
                                                                              "linear")
    assert (config.arch, config.n_feat, config.batch_size, config.epochs) == ("course", 64, 100, 32)
    assert (config.optimizer, config.lr, config.ema_decay, config.grad_clip) == ("adam", 1e-3, 0, 0)
    assert (config.hflip, config.precision, config.context_drop) == (False, "fp32", 0.1)

    trainer = Trainer(dataclasses.replace(config, n_images=200, epochs=1, progress=False,
                                          out=str(tmp_path / "course"), device="cpu", threads=1))
    assert type(trainer.optimizer) is torch.optim.Adam and trainer.ema is None
    assert trainer.total == 2 and not trainer.autocast and trainer.model.arch == "course"
    assert sum(p.numel() for p in trainer.model.parameters()) == 1_481_027
    assert PRESETS["course"]["preset"] == "course"


def test_a_checkpoint_with_a_non_finite_tensor_is_never_written(tmp_path):
    """Issue 13 case 2: the save refuses NaN weights, names the divergence, keeps the old file."""
    out = tmp_path / "run"
    trainer = train(tiny(out, steps=4))
    before = (out / "checkpoint.pt").read_bytes()
    with torch.no_grad():
        next(trainer.model.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(MinidiffError, match="the weights are not finite at step 4: training "
                       "diverged.*the last checkpoint \\(step 4, finite\\) is kept"):
        trainer.save()
    assert (out / "checkpoint.pt").read_bytes() == before


def test_the_progress_bar_shows_the_runs_average_rate(tmp_path, monkeypatch):
    """Issue 16 item 2: one slow stretch (a preview, a busy core) counts in the rate shown."""
    shown = []

    class Recorder(Progress):
        def update(self, step, loss=None, rate=None, total=None):
            if rate is not None:
                shown.append((step, rate))

    monkeypatch.setattr(trainer_module, "Progress", Recorder)
    start = time.perf_counter()
    train(tiny(tmp_path / "run", steps=4, log_every=2),
          on_step=lambda step: time.sleep(0.5) if step == 1 else None)
    elapsed = time.perf_counter() - start
    step, rate = shown[-1]
    assert step == 4 and 4 / elapsed <= rate <= 4 / 0.5  # the average, the sleep included


def test_the_bar_counts_down_from_the_average_rate():
    bar = Progress(True, total=100, start=0)
    bar.update(50, loss=0.25, rate=2.5)
    fields = bar.bar.tasks[0].fields
    assert (fields["rate"], fields["eta"], fields["loss"]) == ("2.50 steps/s", "0:00:20", "0.2500")


def test_min_snr_weights_each_step_by_min_snr_gamma_over_snr(tmp_path):
    """Hang et al. 2023: w_t = min(SNR_t, gamma) / SNR_t on the eps loss; uniform is plain MSE."""
    trainer = Trainer(tiny(tmp_path / "run", loss_weight="min-snr", snr_gamma=5.0,
                           prediction="eps"))
    try:
        t = torch.tensor([1, 250, 500])
        eps, eps_theta = torch.zeros(3, 3, 16, 16), torch.ones(3, 3, 16, 16)
        alpha_bar = trainer.schedule.alpha_bar[t]
        snr = alpha_bar / (1 - alpha_bar)
        expected = (torch.minimum(snr, torch.tensor(5.0)) / snr).mean()
        x_t = torch.randn(3, 3, 16, 16)  # an eps network's loss does not read it
        assert torch.allclose(trainer.loss(eps_theta, x_t, eps, t), expected.float())
        assert snr[0] > 5 > snr[2]  # the clamp acts at small t only
        trainer.config.loss_weight, trainer.config.prediction = "uniform", "eps"
        assert trainer.loss(eps_theta, x_t, eps, t) == 1.0  # the course's plain MSE
    finally:
        trainer.close()


def test_lognormal_t_sampling_draws_on_the_run_schedule(tmp_path):
    """--t-sampling lognormal: the trainer's batches take their t from `lognormal_t` on the run's
    own schedule and its p_mean, p_std; uniform keeps DDPM's U{1..T} (`Batches`' own draw)."""
    from minidiff.noising import lognormal_t, make_schedule

    trainer = Trainer(tiny(tmp_path / "run", t_sampling="lognormal", p_mean=-0.5, p_std=0.7,
                           schedule="cosine", timesteps=100))
    try:
        z = torch.linspace(-3, 3, 50, dtype=torch.float64)
        expected = lognormal_t(z, make_schedule("cosine", 100), -0.5, 0.7)
        assert torch.equal(trainer.batches.t_of_z(z), expected)
        assert 1 <= trainer.batches(0).t.min() <= trainer.batches(0).t.max() <= 100
    finally:
        trainer.close()
    assert Trainer.t_of_z(tiny(tmp_path / "u")) is None


def test_v_prediction_trains_on_the_v_loss_and_loads_back_predicting_v(tmp_path):
    """The uniform loss of a v network, written on eps through `eps_from_v`, is || v - v_theta ||^2
    with v = `v_target(x0, t, eps)`; a saved v run loads back as the same v network."""
    from minidiff.noising import q_sample, v_target

    out = tmp_path / "run"
    trainer = train(tiny(out, prediction="v"))
    try:
        t = torch.tensor([1, 250, 500])
        torch.manual_seed(0)
        x0, eps, v_theta = (torch.randn(3, 3, 16, 16) for _ in range(3))
        x_t = q_sample(x0, t, eps, trainer.schedule)
        expected = ((v_target(x0, t, eps, trainer.schedule) - v_theta) ** 2).mean()
        assert torch.allclose(trainer.loss(v_theta, x_t, eps, t), expected, rtol=1e-5)
        loaded = minidiff.load(out, weights="model", device="cpu").model
        x, c = torch.randn(2, 3, 16, 16), torch.eye(5)[:2]
        with torch.no_grad():
            assert torch.equal(loaded(x, t[1:] / 500, c), trainer.model.eval()(x, t[1:] / 500, c))
        assert loaded.prediction == "v"
    finally:
        trainer.close()


@pytest.mark.parametrize("busy", [0, 1, 64])
def test_threads_default_to_the_cores_no_other_process_runs_on(tmp_path, monkeypatch, capsys,
                                                               busy):
    """Without --threads (and OMP_NUM_THREADS) a run takes the cores left free when it starts,
    saves that count, and a resume continues with it, so the run stays bit-exact."""
    from minidiff.utils import threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "CORES", 2)
    monkeypatch.setattr(trainer_module, "CORES", 2)
    monkeypatch.setattr(threads, "busy_cores", lambda: busy)
    before = torch.get_num_threads()
    train(tiny(tmp_path / "run", threads=None, steps=2, checkpoint_every=0))
    expected = max(1, 2 - busy)
    saved = final_state(tmp_path / "run")["config"]["train"]["threads"]
    assert saved == expected
    said = capsys.readouterr().out
    assert ("another process is running" in said) == (expected < 2), said
    assert torch.get_num_threads() == before, "the run gives torch its thread count back"
    monkeypatch.setattr(threads, "busy_cores", lambda: 0)  # quiet now: the resume keeps the count
    config = train_config({"out": str(tmp_path / "run"), "resume": True,
                          "steps": 4})
    assert config.threads == expected


def test_busy_cores_reads_the_kernels_count_of_running_threads(tmp_path, monkeypatch):
    from minidiff.utils import threads

    stat = tmp_path / "stat"
    monkeypatch.setattr(threads, "PROC_STAT", stat)
    stat.write_text("cpu  1 2 3\nprocs_running 3\nprocs_blocked 0\n")
    assert threads.busy_cores(samples=2, interval=0) == 2  # the reader itself is not busy
    stat.write_text("cpu  1 2 3\nprocs_running 1\n")
    assert threads.busy_cores(samples=1) == 0
    monkeypatch.setattr(threads, "PROC_STAT", tmp_path / "missing")
    assert threads.busy_cores() == 0
    assert threads.training_threads(busy=0) == threads.CORES

"""The lab without a browser: its frames, equations, checks, reloads and other tabs."""

import os
import shutil
import threading

import numpy as np
import pytest

from minidiff import cli
from minidiff.data.images import to_uint8
from minidiff.lab import formulas, views
from minidiff.lab.settings import EVERY_CLASS, MAX_N, MIX, NO_CLASS, read_request
from minidiff.lab.state import PICTURES, Lab
from minidiff.pipeline import load
from minidiff.utils.errors import MinidiffError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ASK = dict(context=EVERY_CLASS, weights=[1, 0, 0, 0, 0], guidance=1, sampler="dpm++2m",
           steps=10, eta=1, n=6, seed=3)


def ask(lab, **changes):
    return read_request(lab.pipe, **{**ASK, **changes})


def test_final_images_are_pipe_samples_and_frames_chain(run):
    lab = Lab(run)
    for sampler in ("dpm++2m", "ddim", "ddpm-no-noise"):
        request = ask(lab, sampler=sampler, guidance=2)
        done = lab.denoise(request)
        expected = load(run).sample(6, sampler=sampler, steps=10, classes=request.classes,
                                    guidance=2, seed=3, normalize="clip")
        np.testing.assert_array_equal(done.final, expected.numpy())
        K = 500 if sampler.startswith("ddpm") else 10
        assert [p.shape[:2] for p in done.pictures.values()] == [(K, 6)] * 4
        assert [t for t, _ in done.steps[1:]] == [s for _, s in done.steps[:-1]]
        # x_s of update k is x_t of update k + 1: one run, kept, never recomputed
        np.testing.assert_array_equal(done.pictures["x_s"][:-1], done.pictures["x_t"][1:])
        assert done.pictures["x_t"][-1, 5].shape == (16, 16, 3)
        pictures, text = done.frame(K, 5)
        np.testing.assert_array_equal(pictures["x_s"], done.final[5])
        assert set(pictures) == set(PICTURES) and text.startswith("x_0 = ")


def test_ddpm_update_is_written_with_the_reference_numbers():
    schedule = formulas.make_schedule("linear", 500, 1e-4, 0.02)
    text = formulas.update_text("ddpm", 500, 499, schedule)
    assert text == "x_499 = (x_500 - 0.0201 * eps) / 0.9899 + 0.1414 * z"
    assert "0.1414" not in formulas.update_text("ddpm-no-noise", 500, 499, schedule)
    assert "D = x0 +" in formulas.update_text("dpm++2m", 450, 400, schedule, t_prev=500)
    assert "* z" in formulas.update_text("ddim", 500, 480, schedule, eta=1)
    assert "* z" not in formulas.update_text("ddim", 500, 480, schedule, eta=0)


@pytest.mark.parametrize("changes, says", [
    ({"steps": 501}, "steps 501 is outside [1, 500]"),
    ({"steps": "ten"}, "steps 'ten' is not a number"),
    ({"guidance": 1e30}, "guidance=1e+30 is too large"),
    ({"guidance": "nan"}, "guidance 'nan' is outside"),
    ({"context": MIX, "weights": [-3, 0, 0, 0, 0]}, "weight of hero -3 is outside"),
    ({"context": MIX, "weights": ["x", 0, 0, 0, 0]}, "weight of hero 'x' is not a number"),
    ({"n": MAX_N + 1}, f"n {MAX_N + 1} is outside [1, {MAX_N}]"),
    ({"seed": -1}, "seed -1 is outside"),
    ({"seed": 1.5}, "seed 1.5 is not a whole number"),
    ({"context": NO_CLASS, "guidance": 3}, "guidance needs a class or a mix"),
    ({"context": "../checkpoint.pt"}, "context '../checkpoint.pt' is not one of"),
    ({"sampler": "euler"}, "sampler 'euler' is not one of"),
])
def test_bad_values_are_refused_in_one_line(run, changes, says):
    lab = Lab(run)
    with pytest.raises(MinidiffError) as refused:
        ask(lab, **changes)
    assert says in str(refused.value) and "\n" not in str(refused.value)


def test_two_pages_at_once_each_get_their_own_images(run):
    lab = Lab(run)
    requests = [ask(lab, seed=1, context="hero"), ask(lab, seed=2, context="food", steps=5)]
    alone = [lab.denoise(r).final for r in requests]
    together = [None, None]

    def page(i):
        together[i] = lab.denoise(requests[i]).final

    threads = [threading.Thread(target=page, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for one, both in zip(alone, together):
        np.testing.assert_array_equal(one, both)
    assert not np.array_equal(*together)


def test_a_new_checkpoint_is_reloaded_and_a_broken_one_is_not(run, tmp_path):
    copy = tmp_path / "runs" / "copy"
    shutil.copytree(run, copy)
    lab = Lab(copy)
    before = lab.denoise(ask(lab)).final
    checkpoint = copy / "checkpoint.pt"
    broken = tmp_path / "broken.pt"
    broken.write_bytes(checkpoint.read_bytes()[:1000])
    os.replace(broken, checkpoint)  # as the trainer writes: by rename
    np.testing.assert_array_equal(lab.denoise(ask(lab)).final, before)
    assert "kept the weights loaded before" in lab.note
    state = load(run).model.state_dict()
    import torch

    whole = torch.load(run / "checkpoint.pt", weights_only=False)
    whole["ema"] = {k: v * 0.5 for k, v in state.items()}  # other weights, the same network
    torch.save(whole, tmp_path / "new.pt")
    os.replace(tmp_path / "new.pt", checkpoint)
    after = lab.denoise(ask(lab)).final
    assert "reloaded" in lab.note and not np.array_equal(after, before)


def test_forward_noise_run_and_eval_views(run):
    lab = Lab(run)
    picture, chart, text = views.forward(lab, 250)
    alpha_bar = lab.schedule.alpha_bar[250]
    assert f"{np.sqrt(alpha_bar):.4f} * x0 + {np.sqrt(1 - alpha_bar):.4f} * eps" in text
    assert picture.shape[0] == 2 * 16 * 6 + 3 * 6 and chart.ndim == 3
    clean, _, _ = views.forward(lab, 0)
    real = to_uint8(views.training_images(lab))
    np.testing.assert_array_equal(clean[6:6 + 96:6, 6:6 + 96:6], real[0])  # t = 0: the image
    assert not np.array_equal(views.forward(lab, 400)[0], picture)
    assert [caption for _, caption in views.previews(run)] == ["step 4", "step 8"]
    assert views.loss_chart(run).shape == chart.shape
    assert "minidiff eval" in views.eval_table(run)


def test_lab_without_gradio_says_what_to_install(run, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gradio" else real(name, *a))
    assert cli.main(["lab", "--run", str(run)]) == 2
    assert capsys.readouterr().err.strip() == \
        'minidiff lab: error: the lab needs Gradio: pip install -e ".[lab]"'


def test_a_latent_run_shows_each_latent_beside_its_decoding(latent_run):
    lab = Lab(latent_run)
    request = ask(lab, n=3, steps=4)
    done = lab.denoise(request)
    pipe = load(latent_run)
    expected = pipe.sample(3, sampler="dpm++2m", steps=4, classes=request.classes, seed=3,
                           normalize="clip")
    np.testing.assert_array_equal(done.final, expected.numpy())
    assert done.final.shape == (3, 32, 32, 3)
    # every picture but the prediction: the 8x8 latent, drawn at 32 px, beside its decoding
    assert done.pictures["x_t"].shape == (4, 3, 32, 64, 3)
    pictures, text = done.frame(4, 2)
    np.testing.assert_array_equal(pictures["x_s"][:, 32:], done.final[2])
    picture, _, formula = views.forward(lab, 250)
    assert picture.ndim == 3 and "DDPM eq. 4" in formula

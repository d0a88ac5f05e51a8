"""The course's own weights: a state_dict saved the course's way loads with `minidiff.load` and
`sample --run`, and anything else that is not a minidiff checkpoint is refused in one line.

The network below is written here from the course's description (shared COURSE.md, "The
network"), module for module, with the course's quirk: its 3 -> n_feat shortcut is built inside
`forward`, so it is not a registered module and its file has no weights for it. Only the layout
matters here (the file holds names and shapes), so it has no forward.
"""

import pytest
import torch
from torch import nn

import minidiff
from minidiff.cli import main

COURSE_CLASSES = ["hero", "non-hero", "food", "spell", "side-facing"]


def conv_bn_gelu(i, o):
    return nn.Sequential(nn.Conv2d(i, o, 3, 1, 1), nn.BatchNorm2d(o), nn.GELU())


class ResidualConvBlock(nn.Module):
    def __init__(self, i, o, is_res=False):
        super().__init__()
        self.same_channels, self.is_res = i == o, is_res
        self.conv1, self.conv2 = conv_bn_gelu(i, o), conv_bn_gelu(o, o)


class UnetDown(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.model = nn.Sequential(ResidualConvBlock(i, o), ResidualConvBlock(o, o),
                                   nn.MaxPool2d(2))


class UnetUp(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.model = nn.Sequential(nn.ConvTranspose2d(i, o, 2, 2), ResidualConvBlock(o, o),
                                   ResidualConvBlock(o, o))


class EmbedFC(nn.Module):
    def __init__(self, i, e):
        super().__init__()
        self.input_dim = i
        self.model = nn.Sequential(nn.Linear(i, e), nn.GELU(), nn.Linear(e, e))


class CourseContextUnet(nn.Module):
    def __init__(self, in_channels=3, n_feat=64, n_cfeat=5, height=16):
        super().__init__()
        n, h = n_feat, height
        self.init_conv = ResidualConvBlock(in_channels, n, is_res=True)
        self.down1, self.down2 = UnetDown(n, n), UnetDown(n, 2 * n)
        self.to_vec = nn.Sequential(nn.AvgPool2d(4), nn.GELU())
        self.timeembed1, self.timeembed2 = EmbedFC(1, 2 * n), EmbedFC(1, n)
        self.contextembed1, self.contextembed2 = EmbedFC(n_cfeat, 2 * n), EmbedFC(n_cfeat, n)
        self.up0 = nn.Sequential(nn.ConvTranspose2d(2 * n, 2 * n, h // 4, h // 4),
                                 nn.GroupNorm(8, 2 * n), nn.ReLU())
        self.up1, self.up2 = UnetUp(4 * n, n), UnetUp(2 * n, n)
        self.out = nn.Sequential(nn.Conv2d(2 * n, n, 3, 1, 1), nn.GroupNorm(8, n), nn.ReLU(),
                                 nn.Conv2d(n, in_channels, 3, 1, 1))


@pytest.fixture(scope="module")
def course_file(tmp_path_factory):
    """`torch.save(nn_model.state_dict(), save_dir + "model_31.pth")`, as the course's lab does
    (n_feat 16 rather than 64 to keep the test fast; the rest as the course)."""
    torch.manual_seed(0)
    nn_model = CourseContextUnet(in_channels=3, n_feat=16, n_cfeat=5, height=16)
    path = tmp_path_factory.mktemp("course") / "model_31.pth"
    torch.save(nn_model.state_dict(), path)
    return path, nn_model.state_dict()


def test_the_courses_saved_weights_load_with_their_size_read_off_them(course_file):
    path, saved = course_file
    pipe = minidiff.load(path, device="cpu")
    assert isinstance(pipe.model, minidiff.ContextUnet) and pipe.model.prediction == "eps"
    assert (pipe.model.n_feat, pipe.n_cfeat, pipe.image_shape) == (16, 5, (3, 16, 16))
    assert pipe.classes == COURSE_CLASSES and pipe.schedule.T == 500
    loaded = pipe.model.state_dict()
    for name, tensor in saved.items():
        assert torch.equal(loaded[name], tensor), name
    extra = set(loaded) - set(saved)
    assert extra == {"init_conv.shortcut.weight", "init_conv.shortcut.bias"}
    assert all(not loaded[name].any() for name in extra), "the course's random shortcut's mean"
    images = pipe.sample(4, classes="hero", seed=0)
    assert images.shape == (4, 3, 16, 16) and torch.isfinite(images).all()


def test_sample_run_takes_the_courses_file(course_file, tmp_path, capsys):
    path, _ = course_file
    out = tmp_path / "grid.png"
    assert main(["sample", "--run", str(path), "--n", "5", "--steps", "5", "--out", str(out),
                 "--device", "cpu"]) == 0
    assert out.is_file()
    capsys.readouterr()


@pytest.mark.parametrize("state, says", [
    ({"a.weight": torch.zeros(2)}, "nor a state_dict of the course's ContextUnet"),
    ({"init_conv.conv1.0.weight": torch.zeros(16, 3, 3, 3)}, "not a state_dict of the course"),
])
def test_other_state_dicts_are_refused_in_one_line(state, says, tmp_path, capsys):
    path = tmp_path / "model.pth"
    torch.save(state, path)
    assert main(["sample", "--run", str(path), "--n", "2", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err, err


def test_a_course_file_with_a_renamed_weight_is_refused(course_file, tmp_path, capsys):
    _, saved = course_file
    state = dict(saved)
    state["out.9.weight"] = state.pop("out.3.weight")
    path = tmp_path / "model.pth"
    torch.save(state, path)
    assert main(["sample", "--run", str(path), "--n", "2", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "weight names differ" in err and len(err.splitlines()) == 1, err

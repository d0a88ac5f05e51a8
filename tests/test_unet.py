"""The two networks behind build_unet: the course's exact size and keys, checkpoints saved before
the split still loading, shapes for both archs, contexts, and clear errors."""

from pathlib import Path

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from minidiff.training.config import ARCHS as TRAIN_ARCHS
from minidiff.unet import ARCHS, ContextUnet, MinidiffUnet, UnetBase, UnetConfig, build_unet
from minidiff.utils.errors import MinidiffError

from compare import assert_close

COURSE_PARAMS = 1_481_027  # n_feat=64, n_cfeat=5, height=16, with the registered 1x1 shortcut
SHORTCUT_PARAMS = 3 * 64 + 64  # the course's 3 -> 64 1x1 conv, which it never registered


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def net(arch="minidiff", **kwargs):
    return build_unet(UnetConfig(arch=arch, **kwargs))


def test_course_arch_has_the_courses_parameter_count():
    model = net("course")
    assert n_params(model) == COURSE_PARAMS
    assert n_params(model) - SHORTCUT_PARAMS == 1_480_771  # the course's own "about 1.48 M"
    assert isinstance(model.init_conv.shortcut, torch.nn.Conv2d)


def test_course_arch_keeps_the_courses_module_names():
    names = set(net("course").state_dict())
    for key in ("init_conv.conv1.0.weight", "down2.model.1.conv2.1.running_mean",
                "timeembed1.model.0.weight", "contextembed2.model.2.bias", "up0.0.weight",
                "up1.model.0.weight", "out.3.bias", "up2.model.2.conv1.0.weight"):
        assert key in names, key


def test_default_config_builds_the_minidiff_arch():
    config = UnetConfig()
    assert (config.arch, config.in_channels, config.n_feat, config.n_cfeat, config.height) == (
        "minidiff", 3, 64, 5, 16)
    assert type(build_unet(config)) is MinidiffUnet and n_params(build_unet(config)) == 1_663_628
    model = build_unet(UnetConfig(arch="course", n_feat=16))
    assert type(model) is ContextUnet and model.arch == "course" and model.n_feat == 16
    assert ARCHS == ("minidiff", "course")  # the default first
    assert TRAIN_ARCHS is ARCHS  # one owner (minidiff/unet.py), which config imports
    for cls, arch in ((MinidiffUnet, "minidiff"), (ContextUnet, "course")):
        assert issubclass(cls, UnetBase) and cls.arch == arch
    import minidiff

    assert minidiff.ContextUnet is ContextUnet  # the course's name for the course's network


# Saved by the one-class network of old (before the split into two networks), n_feat=8,
# height=8, with perturbed buffers: its state dicts, an input and the eps_theta it gave.
BEFORE_THE_SPLIT = Path(__file__).parent / "fixtures" / "unet_state_dicts.pt"


@pytest.mark.parametrize("arch", ARCHS)
def test_state_dicts_saved_before_the_split_load_and_give_the_same_eps_theta(arch):
    saved = torch.load(BEFORE_THE_SPLIT, weights_only=True)[arch]
    model = build_unet(UnetConfig(**saved["config"])).eval()
    model.load_state_dict(saved["state_dict"])  # strict: the same keys and shapes
    assert list(model.state_dict()) == list(saved["state_dict"])  # in the same order
    with torch.no_grad():  # equal up to float32 rounding (thread counts change sum orders)
        eps_theta = model(saved["x"], saved["t"], saved["c"])
    assert_close(eps_theta, saved["eps_theta"], atol=1e-6, rtol=1e-6, what=f"{arch} eps_theta")


@settings(max_examples=20)
@given(arch=st.sampled_from(ARCHS), height=st.sampled_from([4, 8, 12, 16, 32]),
       batch=st.integers(1, 3), channels=st.sampled_from([1, 3]), seed=st.integers(0, 2**16))
@example(arch="course", height=16, batch=1, channels=3, seed=0)
@example(arch="course", height=32, batch=2, channels=3, seed=0)
@example(arch="minidiff", height=32, batch=2, channels=3, seed=0)
def test_output_has_the_inputs_shape(arch, height, batch, channels, seed):
    torch.manual_seed(seed)
    model = net(arch, in_channels=channels, n_feat=16, n_cfeat=5, height=height)
    x = torch.randn(batch, channels, height, height)
    c = torch.eye(5)[torch.randint(0, 5, (batch,))]
    eps_theta = model(x, torch.rand(batch, 1, 1, 1), c)
    assert eps_theta.shape == x.shape and torch.isfinite(eps_theta).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_time_shapes_agree_and_none_is_the_zero_context(arch):
    torch.manual_seed(0)
    model = net(arch, n_feat=16).eval()
    x, t = torch.randn(3, 3, 16, 16), torch.rand(3)
    with torch.no_grad():
        flat = model(x, t, None)
        assert torch.equal(flat, model(x, t.reshape(3, 1, 1, 1), None))
        assert torch.equal(flat, model(x, t, torch.zeros(3, 5)))
        assert torch.equal(flat, model(x, t))  # deterministic: no conv built inside forward
        one_hot = model(x, t, torch.eye(5)[:3])
        later = model(x, t + 0.3, None)
    assert not torch.equal(flat, one_hot), "the context must change eps_theta"
    assert not torch.equal(flat, later), "the time must change eps_theta"


@pytest.mark.parametrize("arch", ARCHS)
def test_unconditional_network(arch):
    model = net(arch, n_feat=16, n_cfeat=0)
    x = torch.randn(2, 3, 16, 16)
    assert model(x, torch.rand(2)).shape == x.shape
    with pytest.raises(MinidiffError, match="unconditional"):
        model(x, torch.rand(2), torch.zeros(2, 5))


@pytest.mark.parametrize("arch", ARCHS)
def test_every_parameter_gets_a_gradient(arch):
    model = net(arch, n_feat=16)
    x, c = torch.randn(4, 3, 16, 16), torch.eye(5)[:4]
    model(x, torch.rand(4), c).square().mean().backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not unused, f"parameters that never affect eps_theta: {unused}"


def one_line_error(call, match):
    with pytest.raises(MinidiffError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("height", [18, 2, 0, 30])
def test_height_not_divisible_by_four_is_refused(height):
    one_line_error(lambda: net(height=height), "multiple of 4")


def test_bad_arguments_are_refused_in_one_line():
    model = net("course", n_feat=16)
    x = torch.randn(2, 3, 16, 16)
    one_line_error(lambda: net("resnet"), "minidiff, course")
    one_line_error(lambda: net(n_feat=12), "multiple of 8")
    one_line_error(lambda: model(torch.randn(2, 3, 32, 32), torch.rand(2)), "height=32")
    one_line_error(lambda: model(x, torch.rand(3)), "one t / T per image")
    one_line_error(lambda: model(x, torch.rand(2), torch.zeros(2, 4)), "one context vector")


@pytest.mark.parametrize("height", [4, 16, 32])
def test_full_resolution_patch_keeps_the_shape_and_costs_four_times_the_first_conv(height):
    torch.manual_seed(0)
    full, patched = net(n_feat=16, height=height, patch=1), net(n_feat=16, height=height)
    x = torch.randn(2, 3, height, height)
    assert full(x, torch.rand(2)).shape == x.shape
    # the 2x2 patches put 4 * 3 channels into the first conv; one pixel puts 3
    assert full.init_conv.in_channels * 4 == patched.init_conv.in_channels == 12


@pytest.mark.parametrize("height", [4, 16, 32])
def test_the_full_resolution_head_keeps_the_shape_and_trains_every_weight(height):
    torch.manual_seed(0)
    model = net(n_feat=16, height=height, pixel_feat=8)
    x = torch.randn(2, 3, height, height)
    model(x, torch.rand(2), torch.eye(5)[:2]).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    # the last patch conv writes 8 features for each of a patch's 4 pixels, not 4 x 3 pixels
    assert model.out[-1].out_channels == 4 * 8 and model.pixel_out[0].in_channels == 8 + 3


def test_the_head_adds_only_its_own_weights_and_leaves_the_default_as_it_was():
    """pixel_feat=0 is the network every earlier checkpoint holds: the same state_dict keys."""
    m, c, n = 16, 3, 16
    plain, headed = net(n_feat=n), net(n_feat=n, pixel_feat=m)
    added = (4 * m - 4 * c) * (n * 9 + 1)  # the last patch conv writes 4m channels, not 4C
    added += (m + c) * m * 9 + m + m * c * 9 + c  # the two 3x3 convolutions at full resolution
    assert n_params(headed) - n_params(plain) == added
    assert set(net(n_feat=n, pixel_feat=0).state_dict()) == set(plain.state_dict())


def test_the_head_is_refused_where_it_cannot_be_built():
    one_line_error(lambda: net(pixel_feat=12), "multiple of 8")
    one_line_error(lambda: net(pixel_feat=8, patch=1), "patch=1 is full resolution already")
    one_line_error(lambda: net(pixel_feat=128), "up to 64")
    one_line_error(lambda: net("course", pixel_feat=8), "settings of the minidiff network")


def test_dropout_is_random_in_training_and_off_in_eval():
    torch.manual_seed(0)
    model = net(n_feat=16, dropout=0.5)
    x, t = torch.randn(2, 3, 16, 16), torch.rand(2)
    with torch.no_grad():
        assert not torch.equal(model.train()(x, t), model(x, t))
        assert torch.equal(model.eval()(x, t), model(x, t))


def test_patch_and_dropout_belong_to_the_minidiff_network():
    one_line_error(lambda: net(patch=4), "patch=4 must be one of 1, 2")
    one_line_error(lambda: net(dropout=1.0), r"dropout=1.0 must be in \[0, 1\)")
    one_line_error(lambda: net("course", patch=1), "settings of the minidiff network")
    one_line_error(lambda: net("course", dropout=0.1), "settings of the minidiff network")


def test_a_v_network_returns_v_theta_and_says_so():
    """The network returns what it predicts; the weights are the same whichever it learns, and
    `noising.eps_from_v` (not the network) makes eps_theta of v_theta."""
    torch.manual_seed(0)
    v_net = net(n_feat=16, prediction="v").eval()
    eps_net = net(n_feat=16).eval()
    eps_net.load_state_dict(v_net.state_dict())  # the same keys: the target is no weight
    assert (v_net.prediction, eps_net.prediction) == ("v", "eps")
    x, t = torch.randn(3, 3, 16, 16), torch.tensor([1, 250, 500])
    with torch.no_grad():
        assert_close(v_net(x, t / 500), eps_net(x, t / 500), atol=0, what="the same layers")
    one_line_error(lambda: net(n_feat=16, prediction="x0"), "prediction='x0' is not one of")

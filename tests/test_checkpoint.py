"""Checkpoints: every malformed file is one MinidiffError line naming it, never a traceback.

Issue 13 case 8: a 6-byte file, `classes=12345`, a config edited to disagree with the weights,
crafted pickles, non-finite weights, a zip bomb, and a fuzz test of bytes mutated from a real
(tiny) checkpoint, where every outcome is a clean load or one line.
"""

import dataclasses
import io
import pickle
import tempfile
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import minidiff
from minidiff.checkpoint import config_sha256, load_checkpoint, save_checkpoint
from minidiff.cli import main
from minidiff.unet import UnetConfig, build_unet
from minidiff.utils.errors import MinidiffError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCHEDULE = {"kind": "linear", "T": 20, "beta1": 1e-4, "beta2": 0.02}


def tiny_state(arch="minidiff", **unet) -> dict:
    """What the trainer saves, for an n_feat=8 network on 8x8 images (one Adam step taken)."""
    torch.manual_seed(0)
    config = UnetConfig(arch=arch, n_feat=8, n_cfeat=2, height=8, **unet)
    model = build_unet(config)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.zeros(1, 3, 8, 8), torch.zeros(1), torch.zeros(1, 2)).sum().backward()
    optimizer.step()
    return {"config": {"unet": dataclasses.asdict(config), "schedule": dict(SCHEDULE),
                       "train": {"image_size": 8, "seed": 0}},
            "classes": ["coin", "gem"], "model": model.state_dict(),
            "ema": {name: t.clone() for name, t in model.state_dict().items()},
            "ema_updates": 1, "optimizer": optimizer.state_dict(), "step": 1, "data_hash": "ab"}


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    save_checkpoint(path, tiny_state())
    return path


def refused(path, match, **kwargs) -> str:
    """load_checkpoint(path) raises one MinidiffError line that names the file and matches."""
    with pytest.raises(MinidiffError, match=match) as info:
        load_checkpoint(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    return message


def write_raw(path, state) -> Path:
    """torch.save without save_checkpoint: a file edited, or made, outside minidiff."""
    torch.save(state, path)
    return path


def test_a_good_checkpoint_loads_and_samples(good):
    state = load_checkpoint(good)
    assert state["config_sha256"] == config_sha256(state["config"])
    trained = minidiff.load(good, device="cpu")
    assert trained.classes == ["coin", "gem"] and trained.schedule.T == 20


@pytest.mark.parametrize("content", [b"abcdef", pickle.dumps({}, protocol=2), b"PK\x03\x04\0\0",
                                     b"", b"\x89PNG\r\n\x1a\n" + bytes(20)])
def test_short_and_foreign_files(tmp_path, content, capsys):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    refused(path, "truncated or corrupted|is not a minidiff checkpoint")
    code = main(["sample", "--ckpt", str(path), "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and str(path) in err


@pytest.mark.parametrize("edit, match", [
    (lambda s: s.update(classes=12345), "classes are 12345, not a list"),
    (lambda s: s.update(classes=["a", "b", "c"]), "3 class names for a network of 2 classes"),
    (lambda s: s.update(config=[1]), "config is"),
    (lambda s: s["config"].update(unet="x"), r"config\['unet'\] is 'x'"),
    (lambda s: s["config"]["unet"].update(n_feat="8"), "n_feat='8' is not a int"),
    (lambda s: s["config"]["unet"].update(n_feat=16), r"needs \(64, 16\)"),
    (lambda s: s["config"]["unet"].update(n_cfeat=3), "3 classes|needs"),
    (lambda s: s["config"]["unet"].update(height=6), "multiple of 4"),
    (lambda s: s["config"]["unet"].update(height=10**6), "image size 1000000 is over"),
    (lambda s: s["config"]["unet"].update(height=16), "for 16 px images but the run trained on 8"),
    (lambda s: s["config"]["schedule"].update(T=2_000_000_000), "T=2000000000 is not"),
    (lambda s: s["config"]["schedule"].update(beta1=float("nan")), "betas .* not finite"),
    (lambda s: s["config"]["schedule"].pop("T"), "schedule has keys"),
    (lambda s: s["config"].update(train=5), r"config\['train'\] is 5"),
    (lambda s: s.update(model={"w": 1}), "model weights are not a state_dict"),
    (lambda s: s["model"].pop("init_conv.weight"), r"lack \['init_conv.weight'\]"),
    (lambda s: s.update(ema={**s["ema"], "extra": torch.zeros(1)}), r"unknown \['extra'\]"),
    (lambda s: s["model"].update({"init_conv.bias": torch.zeros(8, dtype=torch.float64)}),
     "float64"),
    (lambda s: s.update(step=-1), "step is -1, not a count"),
    (lambda s: s.update(step="7"), "step is '7'"),
    (lambda s: s.update(optimizer=[]), "optimizer state is not a torch optimizer's"),
    (lambda s: s["optimizer"].update(param_groups=[{"params": [0, 0]}]), "optimizer state"),
    (lambda s: s["optimizer"].update(state={"x": {}}), "optimizer state"),
    (lambda s: s["optimizer"]["param_groups"][0].update(params="abc"), "optimizer state"),
    (lambda s: s.update(version="1"), "layout version is '1'"),
    (lambda s: s.update(version=99), "newer minidiff"),
    (lambda s: s.update(kind="feature-classifier"), "is a 'feature-classifier' file"),
])
def test_malformed_layouts_give_one_line(tmp_path, edit, match):
    state = tiny_state()
    edit(state)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, state)  # a fresh fingerprint: the layout itself is what is checked
    refused(path, match)


def test_a_config_edited_after_training_is_refused(good, tmp_path):
    """The image size edited (16 for 8): the minidiff network's weights fit any size, so only the
    fingerprint tells; sampling at the edited size would be garbage."""
    state = torch.load(good, weights_only=True)
    state["config"]["unet"]["height"] = 16
    state["config"]["train"]["image_size"] = 16
    refused(write_raw(tmp_path / "edited.pt", state), "config was edited after training")
    del state["config_sha256"]  # a checkpoint without one (older minidiff) is still checked
    state["config"]["unet"]["n_feat"] = 16
    refused(write_raw(tmp_path / "old.pt", state), "does not match this minidiff's network")


def test_course_network_at_another_image_size_does_not_fit(tmp_path):
    state = tiny_state(arch="course")
    state["config"]["unet"]["height"] = state["config"]["train"]["image_size"] = 16
    save_checkpoint(tmp_path / "c.pt", state)
    refused(tmp_path / "c.pt", "up0.0.weight as .* needs")


def test_non_finite_weights_are_refused(tmp_path):
    state = tiny_state()
    state["ema"]["out.2.bias"][0] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", state)
    refused(tmp_path / "nan.pt", "ema weights are not finite .*out.2.bias")


class RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("where", ["model", "config", "top"])
def test_crafted_pickles_stay_refused(tmp_path, where):
    marker = tmp_path / "pwned"
    state = tiny_state()
    if where == "model":
        state["model"]["init_conv.weight"] = RunsCode(marker)
    elif where == "config":
        state["config"]["train"]["seed"] = RunsCode(marker)
    else:
        state = RunsCode(marker)
    refused(write_raw(tmp_path / "crafted.pt", state), "was refused: it holds objects other")
    assert not marker.exists()


def test_a_compressed_record_is_refused_before_torch_reads_it(good, tmp_path):
    """torch.save stores records; a deflated one could claim any size (a zip bomb)."""
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for record in src.infolist():
            dst.writestr(record.filename, src.read(record.filename))
    refused(bomb, "compressed or larger than the file")


def test_a_config_of_shared_lists_is_refused_not_walked_forever(tmp_path):
    nested = []
    for _ in range(40):
        nested = [nested, nested]  # 2**40 leaves, 40 objects in the pickle
    state = tiny_state()
    state["config"]["train"]["junk"] = nested
    refused(write_raw(tmp_path / "dag.pt", {"format": "minidiff-checkpoint", "version": 1,
                                            **state}), "holds over 100000 values")


# %% Fuzz: bytes mutated from a real checkpoint

_GOOD_BYTES = {}


def good_bytes() -> bytes:
    if not _GOOD_BYTES:
        buffer = io.BytesIO()
        state = tiny_state()
        state = {"format": "minidiff-checkpoint", "version": 1, **state,
                 "config_sha256": config_sha256(state["config"])}
        torch.save(state, buffer)
        _GOOD_BYTES["data"] = buffer.getvalue()
        with zipfile.ZipFile(buffer) as archive:  # where data.pkl ends: mutate there most often
            _GOOD_BYTES["pickle_end"] = archive.infolist()[1].header_offset
    return _GOOD_BYTES["data"]


mutations = st.lists(st.tuples(st.sampled_from(["pickle", "directory", "anywhere"]),
                               st.floats(0, 1, exclude_max=True),
                               st.sampled_from(["set", "delete", "insert", "truncate"]),
                               st.binary(min_size=1, max_size=8)), min_size=1, max_size=4)


def mutate(data: bytes, edits) -> bytes:
    data = bytearray(data)
    for region, where, op, value in edits:
        if not data:
            break
        low, high = {"pickle": (0, _GOOD_BYTES["pickle_end"]),
                     "directory": (max(0, len(data) - 6000), len(data)),
                     "anywhere": (0, len(data))}[region]
        at = min(len(data) - 1, low + int(where * (high - low)))
        if op == "set":
            data[at:at + len(value)] = value
        elif op == "delete":
            del data[at:at + 8 * len(value)]
        elif op == "insert":
            data[at:at] = value
        else:
            del data[at:]
    return bytes(data)


@settings(max_examples=40, deadline=None)
@given(edits=mutations)
@example(edits=[("anywhere", 0.0, "truncate", b"\0")]).via("an empty file")
@example(edits=[("pickle", 0.5, "set", b"\xff")]).via("one byte of the pickle")
@example(edits=[("directory", 0.99, "truncate", b"\0")]).via("the end of the central directory")
def test_mutated_checkpoints_load_cleanly_or_give_one_line(edits):
    data = mutate(good_bytes(), edits)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "checkpoint.pt"
        path.write_bytes(data)
        try:
            trained = minidiff.load(path, device="cpu")  # reads, checks, builds net and schedule
        except MinidiffError as error:
            message = str(error)
            assert "\n" not in message and str(path) in message, message
        else:
            assert trained.model(torch.zeros(1, 3, 8, 8), torch.zeros(1)).isfinite().all()

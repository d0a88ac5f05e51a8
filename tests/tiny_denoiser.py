"""A tiny denoiser and pipeline for the tests of the sampling loop and the pipeline: an oracle
towards one fixed image plus a small untrained network, so samples are images worth comparing."""

import torch

import minidiff
from minidiff.data.sprites import CLASSES
from minidiff.pipeline import Pipeline
from minidiff.unet import UnetConfig, build_unet


class TinyDenoiser(torch.nn.Module):
    """A small ContextUnet steering towards one fixed image x0*: eps_theta = the exact noise that
    x_t would hold if x0 were x0*, plus 0.1 x the network's output. Samples then stay in [-1, 1] and
    look different per seed and class, so pixel comparisons after many steps mean something."""

    def __init__(self, schedule, n_cfeat=5):
        super().__init__()
        torch.manual_seed(0)
        self.unet = build_unet(UnetConfig(n_feat=8, n_cfeat=n_cfeat)).eval()
        self.n_cfeat, self.schedule = n_cfeat, schedule
        self.x0 = torch.linspace(-0.8, 0.8, 3 * 16 * 16).reshape(1, 3, 16, 16)
        self.calls = []  # batch size of every forward pass

    def forward(self, x, t_over_T, c=None):
        self.calls.append(len(x))
        t = (t_over_T * self.schedule.T).round().long()
        alpha_bar = self.schedule.alpha_bar[t].float().reshape(-1, 1, 1, 1)
        oracle = (x - alpha_bar.sqrt() * self.x0) / (1 - alpha_bar).sqrt()
        return oracle + 0.1 * self.unet(x, t_over_T, c)


def tiny_pipeline(n_cfeat=5) -> Pipeline:
    schedule = minidiff.make_schedule()
    classes = list(CLASSES) if n_cfeat else []
    unet = {"n_feat": 8, "n_cfeat": n_cfeat, "height": 16, "in_channels": 3}
    return Pipeline(TinyDenoiser(schedule, n_cfeat), schedule, classes, {"unet": unet})

"""The EMA of the weights (`minidiff.ema`): averaged parameters, copied and recalibrated buffers."""

import pytest
import torch

from minidiff.ema import EMA, recalibrate_batchnorm


def test_ema_averages_parameters_and_copies_buffers():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.9)
    start = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.fill_(5.0)
    decay = ema.current_decay()
    assert decay == pytest.approx(0.1)  # warm-up: (1 + 0) / (10 + 0)
    ema.update(model)
    for p0, p in zip(start, ema.model.parameters()):
        torch.testing.assert_close(p, p0 + (1 - decay))
    assert torch.equal(ema.model[1].running_mean, torch.full((2,), 5.0))  # copied, not averaged
    x = torch.randn(64, 2) * 3 + 1
    recalibrate_batchnorm(ema.model, [(x,)])
    expected = ema.model[0](x).mean(0)
    torch.testing.assert_close(ema.model[1].running_mean, expected)  # the EMA weights' own stats
    assert not ema.model.training

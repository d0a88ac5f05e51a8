"""Which DDIM eta should `sample` use by default? FID of DDIM-25 at eta 0 against eta 1.

    python benchmarks/sample_eta.py --run runs/NAME --n 1000 --seeds 0,1,2
    python benchmarks/sample_eta.py --run runs/NAME --n 1000 --seeds 0,1,2 --raw   # unclipped

For each seed, `minidiff.evaluation.metrics.evaluate` draws n samples (classes as the data's)
with DDIM-25 at eta 0 and at eta 1 and scores them in the cached feature classifier against n
real images; the noise floor (real against real) is printed beside them. The seed is shared by
both etas, so each pair differs only in eta. Quality, not speed: it is safe on a busy machine.
"""

from __future__ import annotations

import argparse
import functools

import torch

import minidiff
from minidiff.data.datasets import load_dataset
from minidiff.evaluation.classifier import cached_classifier
from minidiff.evaluation.metrics import evaluate
from minidiff.samplers import SamplerConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="run folder (default: the newest)")
    parser.add_argument("--data", default="sprites")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--raw", action="store_true",
                        help="score the sampler's unclipped output (pipe.sample(clip=False)), as "
                             "minidiff did before pipe.sample clipped to [-1, 1]")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = minidiff.load(args.run)
    if args.raw:
        pipe.sample = functools.partial(pipe.sample, clip=False)  # what `evaluate` calls
    dataset = load_dataset(args.data, image_size=pipe.image_shape[1])
    classifier, info = cached_classifier(dataset)
    print(f"run {pipe.path}; classifier {info['path']} (held-out accuracy {info['accuracy']:.3f})")
    print("| seed | FID eta 0 | FID eta 1 | noise floor | accuracy eta 0 | accuracy eta 1 |")
    print("|---|---|---|---|---|---|")
    totals = {0.0: 0.0, 1.0: 0.0}
    seeds = [int(s) for s in args.seeds.split(",")]
    for seed in seeds:
        rows = {}
        for eta in totals:
            config = SamplerConfig(sampler="ddim", steps=args.steps, eta=eta)
            rows[eta] = evaluate(pipe, dataset, config, n=args.n, seed=seed,
                                 classifier=classifier, classifier_info=info)
            totals[eta] += rows[eta]["fid"] / len(seeds)
        zero, one = rows[0.0], rows[1.0]
        print(f"| {seed} | {zero['fid']:.3f} | {one['fid']:.3f} | {zero['fid_noise_floor']:.3f} "
              f"| {zero['conditional_accuracy']:.3f} | {one['conditional_accuracy']:.3f} |",
              flush=True)
    print(f"mean FID over {len(seeds)} seeds: eta 0 {totals[0.0]:.3f}, eta 1 {totals[1.0]:.3f}")


if __name__ == "__main__":
    main()

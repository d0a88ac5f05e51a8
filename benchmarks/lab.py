"""Does the lab feel live? Time a control change and a timeline scrub, in the page and without it.

    python benchmarks/lab.py --run runs/NAME                 # 16 sprites, DPM++2M-10, 10 repeats
    python benchmarks/lab.py --run runs/NAME --no-page       # the lab's calls only, no browser

The issue's targets, on 2 CPU cores: a change of any control shows new images for 16 sprites with
DPM++2M-10 within 1 s, and scrubbing the timeline answers within 0.2 s (the frames of one sampling
run are kept, never recomputed: `minidiff.lab.state`). "page" rows drive the served page in
headless Chromium (Playwright, Debian's /usr/bin/chromium) and time from the typed value to the
new image in the page; "lab" rows time `Lab.denoise` and `Denoising.frame` alone. Each row prints
the load average beside its numbers, then one line per target: median over the threshold.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from minidiff.lab.settings import EVERY_CLASS, read_request
from minidiff.lab.state import Lab

CHROMIUM = "/usr/bin/chromium"
TARGETS = {"control": 1.0, "scrub": 0.2}  # seconds: the "feels live"


def load_average() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def row(name: str, times: list[float]) -> float:
    median = statistics.median(times)
    print(f"{name:<34} median {median:.3f} s, best {min(times):.3f} s over {len(times)}, "
          f"load average {load_average()}")
    return median


def lab_rows(lab: Lab, args) -> dict[str, float]:
    """`Lab.denoise` for a new guidance each time, and `Denoising.frame` at random updates."""
    asked = dict(context=EVERY_CLASS, weights=[1] + [0] * (len(lab.pipe.classes) - 1),
                 sampler="dpm++2m", steps=args.steps, eta=1, n=args.n, seed=0)
    lab.denoise(read_request(lab.pipe, guidance=1, **asked))  # warm-up
    control, scrub = [], []
    for repeat in range(args.repeats):
        start = time.perf_counter()
        done = lab.denoise(read_request(lab.pipe, guidance=1.5 + 0.1 * repeat, **asked))
        control.append(time.perf_counter() - start)
        start = time.perf_counter()
        done.frame(1 + repeat % len(done.steps), repeat % args.n)
        scrub.append(time.perf_counter() - start)
    return {"control": row("lab: Lab.denoise", control), "scrub": row("lab: Denoising.frame",
                                                                      scrub)}


def page_rows(lab_run: str, args) -> dict[str, float]:
    """The served page in Chromium: type a value, wait for the image whose src changes."""
    from playwright.sync_api import sync_playwright

    import minidiff.lab

    server = minidiff.lab.launch(lab_run, block=False)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server.local_url)
            page.wait_for_selector("#final img", timeout=60_000)
            for element, value in (("n", args.n), ("steps", args.steps)):
                box = page.locator(f"#{element} input[type=number]").first
                if float(box.input_value()) != value:  # the same value changes no image
                    typed(page, element, value, "final")
            control = [typed(page, "guidance", 1.5 + 0.1 * r, "final")
                       for r in range(args.repeats)]
            scrub = [typed(page, "timeline", 1 + r % args.steps, "frame-x_t")
                     for r in range(1, args.repeats + 1)]
            browser.close()
    finally:
        server.close()
    return {"control": row("page: control -> new images", control),
            "scrub": row("page: timeline -> new x_t", scrub)}


def typed(page, element: str, value, image: str) -> float:
    """Seconds from typing `value` into `element` to a new `image` in the page."""
    before = page.get_attribute(f"#{image} img", "src")
    box = page.locator(f"#{element} input[type=number]").first
    box.fill(f"{value:g}" if isinstance(value, float) else str(value))
    start = time.perf_counter()
    box.press("Enter")
    page.wait_for_function(f"document.querySelector('#{image} img').src !== {before!r}",
                           timeout=60_000)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="run folder (default: the newest under runs/)")
    parser.add_argument("--n", type=int, default=16, help="sprites per batch")
    parser.add_argument("--steps", type=int, default=10, help="DPM++2M updates")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the lab's: 1)")
    parser.add_argument("--no-page", action="store_true", help="skip the browser rows")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lab = Lab(args.run)
    print(f"run {lab.folder}, {args.n} sprites, DPM++2M-{args.steps}, {args.threads} thread(s), "
          f"torch {torch.__version__}, load average {load_average()} at the start")
    medians = {"lab": lab_rows(lab, args)}
    if not args.no_page:
        if not os.path.exists(CHROMIUM):
            print(f"no Chromium at {CHROMIUM}: page rows skipped (apt-get install -y chromium)")
        else:
            medians["page"] = page_rows(str(lab.folder), args)
    for where, found in medians.items():
        for target, limit in TARGETS.items():
            ratio = found[target] / limit
            print(f"{where} {target}: median {found[target]:.3f} s against {limit:g} s: ratio "
                  f"{ratio:.2f} ({'within' if ratio <= 1 else 'OVER'}), load average "
                  f"{load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

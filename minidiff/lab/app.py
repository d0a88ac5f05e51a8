"""The lab's page: Gradio widgets wired to `minidiff.lab.state` and `minidiff.lab.views`.

Four tabs: denoise step by step (the timeline scrubs the frames one sampling run kept), noise
forward, the samplers side by side, the run itself (refreshed while `train` writes). Each page
keeps its own sampling run in a `gr.State`, so two tabs never see each other's images. Every
handler shows bad input as one line in the status box (`_shown`), never a traceback.
"""

from __future__ import annotations

import functools
import sys
import traceback

import gradio as gr
import numpy as np

from minidiff.data.images import grid
from minidiff.lab import views
from minidiff.lab.settings import MAX_N, context_choices, number, read_request
from minidiff.lab.state import Lab
from minidiff.pipeline import MIX_WEIGHTS
from minidiff.samplers import ETA, GUIDANCE, SAMPLERS
from minidiff.utils.errors import MinidiffError

__all__ = ["build"]

SCALE = 8  # each 16 px picture shown 128 px wide (nearest: the pixels stay visible)
REFRESH_S = 3.0  # how often the run tab looks for new metrics and previews


def Slider(*args, **kwargs) -> gr.Slider:
    """A slider whose typed value reaches the lab unchecked, so that `read_request` refuses an
    out-of-range one in the lab's own words (Gradio's own check raises on the server). Set on
    the instance: a subclass of a Gradio component writes a .pyi file beside this one."""
    slider = gr.Slider(*args, **kwargs)
    slider.preprocess = lambda payload: payload
    return slider


def build(lab: Lab) -> gr.Blocks:
    """The lab's page for `lab`'s run."""
    pipe = lab.pipe
    names = pipe.classes or [str(i) for i in range(pipe.n_cfeat)]
    choices = context_choices(pipe)
    with gr.Blocks(title="minidiff lab", analytics_enabled=False) as page:
        gr.Markdown(f"# minidiff lab: `{lab.folder.name}`\n{_about(lab)}")
        status = gr.Markdown("", elem_id="status")
        run_state = gr.State(None)
        with gr.Tab("Denoise, step by step"):
            with gr.Row():
                with gr.Column(scale=1):
                    context = gr.Dropdown(choices, value=choices[0], label="context",
                                          elem_id="context")
                    weights = [Slider(*MIX_WEIGHTS, value=1.0 if i == 0 else 0.0, step=0.05,
                                         label=f"weight of {name} (mix)", elem_id=f"weight-{i}")
                               for i, name in enumerate(names)]
                    guidance = Slider(*GUIDANCE, value=1.0, step=0.1, elem_id="guidance",
                                         label="guidance s (1: off, the plain conditional eps)")
                    sampler = gr.Dropdown(list(SAMPLERS), value="dpm++2m", label="sampler",
                                          elem_id="sampler")
                    steps = Slider(1, pipe.schedule.T, value=10, step=1, elem_id="steps",
                                      label="steps (DDIM, dpm++2m; DDPM takes all T)")
                    eta = Slider(0, 1, value=ETA, step=0.05, label="eta (DDIM)")
                    n = Slider(1, MAX_N, value=16, step=1, label="sprites", elem_id="n")
                    seed = gr.Number(0, precision=0, label="seed", elem_id="seed")
                with gr.Column(scale=2):
                    final = gr.Image(label="the batch's final images", elem_id="final",
                                     interactive=False)
                    timeline = Slider(1, 10, value=10, step=1, elem_id="timeline",
                                         label="timeline: update k")
                    chosen = Slider(0, MAX_N - 1, value=0, step=1, label="image shown",
                                       elem_id="chosen")
                    formula = gr.Markdown(elem_id="formula")
                    with gr.Row():
                        shown = [gr.Image(label=label, elem_id=f"frame-{key}", interactive=False)
                                 for key, label in _frame_labels(pipe)]
        with gr.Tab("Noise, forward"):
            t = Slider(0, pipe.schedule.T, value=pipe.schedule.T // 5, step=1,
                          label="t", elem_id="forward-t")
            noised = gr.Image(label="training images (top) and q_sample at t (below)",
                              interactive=False)
            forward_text = gr.Markdown()
            snr = gr.Image(label="SNR", interactive=False)
        with gr.Tab("Samplers side by side"):
            go = gr.Button("run DDPM-500, DDIM-25 and DPM++2M-10 on the context and seed above")
            with gr.Row():
                grids = [gr.Image(label=f"{s}-{k}", interactive=False) for s, k in views.COMPARED]
            evals = gr.Markdown(views.eval_table(lab.folder))
        with gr.Tab("The run"):
            loss = gr.Image(label="loss", interactive=False)
            gallery = gr.Gallery(label="preview grids by step", columns=4)
            signature = gr.State(None)
            timer = gr.Timer(REFRESH_S)

        controls = [context, guidance, sampler, steps, eta, n, seed, *weights]

        def ask(*values):
            context_, guidance_, sampler_, steps_, eta_, n_, seed_, *weights_ = values
            return read_request(lab.pipe, context=context_, weights=weights_, guidance=guidance_,
                                sampler=sampler_, steps=steps_, eta=eta_, n=n_, seed=seed_)

        def denoise(i, *values):
            run = lab.denoise(ask(*values))
            K = len(run.steps)
            pictures, _ = run.frame(K, i)
            grid_ = grid(run.final, nrow=run.width, scale=6)
            return (run, grid_, gr.Slider(maximum=K, value=K), *_enlarged(pictures),
                    _formula(run, K), _done(lab, f"{K} updates in {run.seconds:.2f} s"))

        def scrub(run, k, i):
            if run is None:  # the first sampling run has not come back yet
                return (gr.skip(),) * 5
            k = number(k, "timeline update", 1, len(run.steps), integer=True)
            pictures, _ = run.frame(k, number(i, "image", 0, run.request.n - 1, integer=True))
            return (*_enlarged(pictures), _formula(run, k))

        def side_by_side(*values):
            results = views.compare(lab, ask(*values))
            return (*[picture for picture, _ in results], views.eval_table(lab.folder) +
                    "\n\n" + "; ".join(caption for _, caption in results))

        def refresh(before):
            now = _signature(lab)
            if now == before:
                return gr.skip(), gr.skip(), before
            return views.loss_chart(lab.folder), views.previews(lab.folder), now

        sampled = [run_state, final, timeline, *shown, formula, status]
        sample = _shown(denoise, status, says=True)
        for control in controls:
            control.change(sample, [chosen, *controls], sampled, trigger_mode="always_last",
                           concurrency_id="network")
        look = _shown(scrub, status)
        for control in (timeline, chosen):
            control.change(look, [run_state, timeline, chosen], [*shown, formula, status],
                           trigger_mode="always_last", show_progress="hidden")
        noise = (_shown(lambda t_: views.forward(lab, t_), status), [t],
                 [noised, snr, forward_text, status])
        t.change(*noise, trigger_mode="always_last", show_progress="hidden")
        go.click(_shown(side_by_side, status), controls, [*grids, evals, status],
                 concurrency_id="network")
        run_view = (_shown(refresh, status), [signature], [loss, gallery, signature, status])
        timer.tick(*run_view, show_progress="hidden")
        page.load(sample, [chosen, *controls], sampled)
        page.load(*noise)
        page.load(*run_view)
    page.lab = lab  # for the CLI's line naming the run served
    return page


def _about(lab: Lab) -> str:
    pipe = lab.pipe
    kind = "latent diffusion: each picture shows the latent beside its decoding" \
        if pipe.decoder is not None else "pixel diffusion"
    predicts = getattr(pipe.model, "prediction", "eps")
    return (f"{kind}; the network predicts {predicts}; T = {pipe.schedule.T}. Change any control "
            "and the batch is sampled again; the timeline scrubs through its updates.")


def _frame_labels(pipe) -> list[tuple[str, str]]:
    predicts = "eps_theta" if getattr(pipe.model, "prediction", "eps") == "eps" else "v_theta"
    return [("x_t", "x_t"), ("prediction", f"the network's {predicts}"),
            ("x0_theta", "predicted x0_theta"), ("x_s", "x_s, after the update")]


def _enlarged(pictures: dict) -> list[np.ndarray]:
    return [pictures[name].repeat(SCALE, 0).repeat(SCALE, 1) for name in pictures]


def _formula(run, k) -> str:
    t, s = run.steps[int(k) - 1]
    return f"**update {int(k)} of {len(run.steps)}, t = {t} -> {s}:** `{run.texts[int(k) - 1]}`"


def _done(lab: Lab, text: str) -> str:
    return f"{text}. {lab.note}" if lab.note else text


def _signature(lab: Lab):
    """What the run tab shows changes when these do: metrics.jsonl and the preview files."""
    files = [lab.folder / "metrics.jsonl", *sorted(lab.folder.glob("samples_*.png"))]
    return tuple((f.name, f.stat().st_mtime_ns) for f in files if f.exists())


def _shown(handler, status: gr.Markdown, says: bool = False):
    """`handler` whose outputs end with the status box: left as it is on success (unless the
    handler `says` something there itself); on bad input one line there and nothing else
    changed. An unexpected error is shown the same way, its traceback on the server's terminal."""
    @functools.wraps(handler)
    def wrapped(*values):
        try:
            result = tuple(handler(*values))
            return result if says else (*result, gr.skip())
        except MinidiffError as error:
            message = f"**refused:** {str(error).splitlines()[0]}"
        except Exception as error:  # a bug must not kill the page
            traceback.print_exc(file=sys.stderr)
            message = f"**error:** {type(error).__name__}: {str(error)[:200]}"
        return {status: message}  # Gradio updates only the components a dict names
    return wrapped

"""`python -m minidiff lab`: a local web page to look inside the learner's own run.

    import minidiff.lab
    minidiff.lab.launch()                    # the newest run under runs/; inline in a notebook

Denoise step by step (x_t, the network's prediction, x0_theta and each update written out with
its numbers), noise forward over the run's training images, the samplers side by side, and the
run's loss and previews as `train` writes them. The state and the pictures live in
`minidiff.lab.state` and `minidiff.lab.views`, free of Gradio; `minidiff.lab.app` is the page.
Needs the `lab` extra (`pip install -e ".[lab]"`). How fast it answers: benchmarks/lab.py.
"""

from __future__ import annotations

import importlib.util
import os

from minidiff.utils.errors import MinidiffError

__all__ = ["INSTALL", "LOCAL", "launch", "needs_gradio"]

INSTALL = 'the lab needs Gradio: pip install -e ".[lab]"'
LOCAL = "127.0.0.1"  # only this machine can open the page unless `host` says otherwise


def needs_gradio() -> None:
    """Raise the one-line install hint where Gradio is not installed."""
    if importlib.util.find_spec("gradio") is None:
        raise MinidiffError(INSTALL)


def launch(run: str | os.PathLike | None = None, host: str = LOCAL, port: int | None = None,
           runs_dir="runs", device="cpu", block: bool = True, **options):
    """Serve the lab on `run` (None: the newest under `runs_dir`) at http://host:port and return
    the Gradio page (inline in a Jupyter or Colab notebook). `block=False` returns at once,
    the server running in a thread (`page.close()` stops it)."""
    needs_gradio()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from minidiff.lab.app import build
    from minidiff.lab.state import Lab

    page = build(Lab(run, runs_dir, device))
    page.queue(default_concurrency_limit=1)
    page.launch(server_name=host, server_port=port, prevent_thread_lock=not block,
                show_error=False, quiet=True, **options)
    return page

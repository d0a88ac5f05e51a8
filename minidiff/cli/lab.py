"""`python -m minidiff lab`: serve the lab (`minidiff.lab`) on one run, on this machine only.

    python -m minidiff lab                        # the newest run under runs/
    python -m minidiff lab --run runs/NAME --port 7861
    python -m minidiff lab --host 0.0.0.0         # listen wider: any machine reaching this one

The run is resolved as `sample --run` resolves it and fixed for the server's life: the page names
no file. Without the `lab` extra it says what to install, in one line (exit 2).
"""

from __future__ import annotations

from minidiff.cli import flags
from minidiff.cli.sample import THREADS, threads
from minidiff.lab import LOCAL  # imports no Gradio: --help works without the extra
from minidiff.training.config import CORES


def add_arguments(parser) -> None:
    add = parser.add_argument
    add("--run", help="run folder (default: the newest under runs/)")
    add("--host", default=LOCAL, help="address to listen on; anything but 127.0.0.1 lets other "
        "machines open the lab")
    add("--port", type=flags.integer(low=1, high=65535), help="port (default: 7860, or the next "
        "free one)")
    add("--device", default="cpu", help="cpu | cuda | mps | auto")
    add("--threads", type=flags.integer(low=1, high=CORES, why=f"this machine has {CORES} cores"),
        default=THREADS, help="torch CPU threads; more only help on an idle machine")


def main(args) -> int:
    from minidiff import lab

    lab.needs_gradio()  # before anything is loaded: one line saying what to install
    if args.host != LOCAL:
        print(f"listening on {args.host}, not only on this machine: anyone who can reach it can "
              "use the lab (it opens only this run and names no file)")
    with threads(args.threads):
        page = lab.launch(args.run, host=args.host, port=args.port, device=args.device,
                          block=False)
        print(f"lab on {page.lab.folder}: {page.local_url} (Ctrl-C stops it)", flush=True)
        try:
            page.block_thread()
        finally:
            page.close()
    return 0

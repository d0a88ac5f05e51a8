"""Ahead-of-time compilation of every kernel for sm_80 and sm_90, and what the PTX says it costs.

No GPU is needed: `triton.compile` lowers a kernel to PTX for a named target and ptxas (bundled
with Triton) assembles the cubin. From these we read the cost on paper: global loads and stores
per element and whether they are 16-byte vectors, bytes moved per element against the minimum
the update needs, and registers and spills from ptxas's own log.

Pointer arguments (and `n_per_sample`, the per-sample length) get the `tt.divisibility` 16
attribute that the JIT infers for aligned tensors; without it nothing vectorises. Run
`python -m minidiff.kernels.compile` for the table. Kernels must be defined as real JIT
functions, not for the interpreter, so `compile_all` runs itself in a subprocess with
TRITON_INTERPRET=0 when needed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

CAPABILITIES = (80, 90)
BLOCK, NUM_WARPS = 1024, 4  # a sprite batch's launch: 8 elements per thread
_TY = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class Variant:
    """One specialisation of one kernel: which kernel, its storage dtype and constexprs."""

    kernel: str  # "ddpm_step", "ddim_step" or "q_sample"
    dtype: str = "float32"  # storage dtype of every (B, N) tensor
    noise: str = "philox"  # NOISE constexpr: "philox" (drawn in-kernel), "tensor" or "none"
    clip_x0: bool = False  # DDIM's CLIP_X0
    second_order: bool = False  # DPM-Solver++'s SECOND_ORDER (reads x0_theta_prev)
    sde: bool = False  # DPM-Solver++'s SDE (its noise: `noise`)

    @property
    def name(self) -> str:
        clip = "+clip" if self.clip_x0 else ""
        if self.kernel == "dpm_solver_step":
            sde = f"sde {self.noise}, " if self.sde else ""
            return f"{self.kernel}[{sde}order {1 + self.second_order}, {self.dtype}]"
        return f"{self.kernel}[{self.noise}{clip}, {self.dtype}]"

    def min_bytes_per_element(self) -> int:
        """Bytes each element must move: its tensors read and written once, nothing else."""
        tensors = {"ddpm_step": 3, "ddim_step": 3, "q_sample": 3}.get(self.kernel)  # x, eps, out
        if self.kernel == "dpm_solver_step":  # x_t, eps_theta (, x0_theta_prev) -> x_s, x0_theta
            tensors = 4 + self.second_order
        return _BYTES[self.dtype] * (tensors + (self.noise == "tensor"))


VARIANTS = (
    Variant("ddpm_step", "float32", "philox"),
    Variant("ddpm_step", "float32", "tensor"),
    Variant("ddpm_step", "float32", "none"),
    Variant("ddpm_step", "float16", "philox"),
    Variant("ddpm_step", "bfloat16", "philox"),
    Variant("ddim_step", "float32", "none"),
    Variant("ddim_step", "float32", "philox", clip_x0=True),
    Variant("q_sample", "float32", "philox"),
    Variant("dpm_solver_step", "float32", "none"),
    Variant("dpm_solver_step", "float32", "none", second_order=True),
    Variant("dpm_solver_step", "bfloat16", "none", second_order=True),
    Variant("dpm_solver_step", "float32", "philox", second_order=True, sde=True),
)


@dataclass(frozen=True)
class Build:
    """The compiled variant for one GPU and its cost on paper."""

    variant: Variant
    capability: int
    ptx: str
    cubin_bytes: int
    registers: int
    spill_stores: int  # bytes
    spill_loads: int  # bytes
    loads: dict  # per-element global load instruction -> count per thread
    stores: dict  # per-element global store instruction -> count per thread

    def per_element(self, ops: dict) -> tuple[float, float]:
        """(tensor elements accessed, bytes) per element, from per-thread memory instructions:
        2.0 loads per element means each element's x_t and eps are read once, and nothing else."""
        elements = BLOCK // (32 * NUM_WARPS)
        nbytes = sum(n * _access_bytes(op) for op, n in ops.items()) / elements
        return nbytes / _BYTES[self.variant.dtype], nbytes

    @property
    def vectorised(self) -> bool:
        return all(".v4." in op for op in [*self.loads, *self.stores])


def _access_bytes(op: str) -> int:
    """Bytes moved by one PTX access such as ld.global.v4.b32 or st.global.b16."""
    lanes = int(re.search(r"\.v(\d)", op).group(1)) if ".v" in op else 1
    return lanes * int(re.search(r"\.[bfsu](\d+)$", op).group(1)) // 8


def memory_ops(ptx: str, kind: str) -> dict:
    """Per-element global accesses (`ld` or `st`) in the PTX: the predicated ones.

    Every per-element access is masked (`@%p ld.global...`). Unpredicated loads are the program's
    scalar gathers (t, schedule entries) or libdevice's constant tables for sin/cos argument
    reduction of huge angles, which never run here; neither scales with the element count.
    """
    counts: dict = {}
    for op in re.findall(rf"@%p\d+\s+({kind}\.global[\w.]*)", ptx):
        counts[op] = counts.get(op, 0) + 1
    return counts


def _kernel_and_signature(variant: Variant):
    from minidiff.kernels import dpm_solver, noising, samplers

    data, i64, f64 = f"*{_TY[variant.dtype]}", "i64", "*fp64"
    if variant.kernel == "ddpm_step":
        fn = samplers._ddpm_step_kernel
        sig = {"x_t_ptr": data, "eps_theta_ptr": data, "t_ptr": "*i64", "alpha_ptr": f64,
               "beta_ptr": f64, "alpha_bar_ptr": f64, "sigma2_ptr": f64, "z_ptr": data,
               "philox_seed": i64, "out_ptr": data, "n_per_sample": "i32"}  # fmt: skip
        constexprs = {"NOISE": variant.noise, "BLOCK": BLOCK}
    elif variant.kernel == "ddim_step":
        fn = samplers._ddim_step_kernel
        sig = {"x_t_ptr": data, "eps_theta_ptr": data, "t_ptr": "*i64", "s_ptr": "*i64",
               "alpha_bar_ptr": f64, "eta": "fp32", "z_ptr": data, "philox_seed": i64,
               "out_ptr": data, "n_per_sample": "i32"}  # fmt: skip
        constexprs = {"CLIP_X0": variant.clip_x0, "NOISE": variant.noise, "BLOCK": BLOCK}
    elif variant.kernel == "dpm_solver_step":
        fn = dpm_solver._dpm_solver_step_kernel
        sig = {"x_t_ptr": data, "eps_theta_ptr": data, "t_ptr": "*i64", "s_ptr": "*i64",
               "alpha_bar_ptr": f64, "x0_theta_prev_ptr": data, "t_prev_ptr": "*i64",
               "x_s_ptr": data, "x0_theta_ptr": data, "z_ptr": data, "philox_seed": i64,
               "n_per_sample": "i32"}  # fmt: skip
        constexprs = {"SECOND_ORDER": variant.second_order, "SDE": variant.sde,
                      "NOISE": variant.noise, "BLOCK": BLOCK}
    else:
        fn = noising._q_sample_kernel
        sig = {"x0_ptr": data, "t_ptr": "*i64", "alpha_bar_ptr": f64, "philox_seed": i64,
               "x_t_ptr": data, "eps_ptr": data, "n_per_sample": "i32"}  # fmt: skip
        constexprs = {"NOISE": variant.noise, "BLOCK": BLOCK}
    sig.update(dict.fromkeys(constexprs, "constexpr"))
    return fn, sig, constexprs


def compile_variant(variant: Variant, capability: int) -> Build:
    """Compile one variant for sm_<capability>; needs kernels defined with TRITON_INTERPRET=0."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn, signature, constexprs = _kernel_and_signature(variant)
    if not isinstance(fn, triton.runtime.JITFunction):
        raise TypeError("kernels were defined for the interpreter; use compile_all()")
    index = {name: (fn.arg_names.index(name),) for name in signature}  # keys (i,): triton >= 3.6
    aligned = [n for n, ty in signature.items() if ty.startswith("*") or n == "n_per_sample"]
    attrs = {index[n]: [["tt.divisibility", 16]] for n in aligned}
    source = ASTSource(fn, signature, {index[k]: v for k, v in constexprs.items()}, attrs)
    log = io.StringIO()
    with contextlib.redirect_stdout(log):  # TRITON_DUMP_PTXAS_LOG prints ptxas -v here
        kernel = triton.compile(
            source,
            target=GPUTarget("cuda", capability, 32),
            options={"num_warps": NUM_WARPS, "enable_fp_fusion": True},
        )
    ptxas = log.getvalue()
    registers = re.search(r"Used (\d+) registers", ptxas)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", ptxas)
    return Build(
        variant=variant,
        capability=capability,
        ptx=kernel.asm["ptx"],
        cubin_bytes=len(kernel.asm["cubin"]),
        registers=int(registers.group(1)) if registers else -1,
        spill_stores=int(spills.group(1)) if spills else -1,
        spill_loads=int(spills.group(2)) if spills else -1,
        loads=memory_ops(kernel.asm["ptx"], "ld"),
        stores=memory_ops(kernel.asm["ptx"], "st"),
    )


def compile_all(variants=VARIANTS, capabilities=CAPABILITIES) -> list[Build]:
    """Compile every variant for every capability, in a clean subprocess (fresh Triton cache,
    ptxas log on, interpreter off) so that it works on a machine without a GPU."""
    request = json.dumps(
        {"variants": [dataclasses.asdict(v) for v in variants], "capabilities": list(capabilities)}
    )
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TRITON_INTERPRET="0", TRITON_CACHE_DIR=cache,
                   TRITON_DUMP_PTXAS_LOG="1", TRITON_DEFAULT_FP_FUSION="1")  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "minidiff.kernels.compile", "--worker"],
            input=request, capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"AOT compilation failed:\n{done.stderr[-4000:]}")
    builds = []
    for item in json.loads(done.stdout):
        item["variant"] = Variant(**item["variant"])
        builds.append(Build(**item))
    return builds


def _worker() -> None:
    """Subprocess side of `compile_all`: a request on stdin, the builds as JSON on stdout."""
    request = json.load(sys.stdin)
    builds = [
        compile_variant(Variant(**v), capability)
        for v in request["variants"]
        for capability in request["capabilities"]
    ]
    json.dump([dataclasses.asdict(b) for b in builds], sys.stdout)


def report(builds: list[Build]) -> str:
    """The on-paper cost table: one line per variant and GPU."""
    header = (
        f"{'kernel':36} {'sm':>3} {'ld/elem':>7} {'st/elem':>7} {'B/elem':>6} {'min B':>5} "
        f"{'vec4':>4} {'regs':>4} {'spill st/ld B':>13}"
    )
    lines = [header, "-" * len(header)]
    for b in builds:
        n_ld, b_ld = b.per_element(b.loads)
        n_st, b_st = b.per_element(b.stores)
        lines.append(
            f"{b.variant.name:36} {b.capability:>3} {n_ld:>7.2f} {n_st:>7.2f} {b_ld + b_st:>6.1f} "
            f"{b.variant.min_bytes_per_element():>5} {'yes' if b.vectorised else 'no':>4} "
            f"{b.registers:>4} {f'{b.spill_stores}/{b.spill_loads}':>13}"
        )
    lines.append(
        f"(BLOCK={BLOCK}, num_warps={NUM_WARPS}: {BLOCK // (32 * NUM_WARPS)} elements per thread; "
        "ld/st: tensor elements read/written per element; vec4: every access is 16 bytes wide)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    if "--worker" in sys.argv:
        _worker()
    else:
        print(report(compile_all()))

# %% [markdown]
# # Chapter 7 — The fused kernel: one sampling step, one trip through memory
#
# **You will learn**
# - why a sampling step's cost is memory traffic, not arithmetic, and how many bytes per pixel
#   eager torch moves for one DDPM step compared with the minimum;
# - how to read that minimum off the compiler's output (PTX) without owning a GPU;
# - how the Triton kernel mirrors its NumPy reference term by term (s1, s2, s3);
# - how the kernel draws its noise z in registers with Philox, and why those numbers equal the
#   reference's `randn` exactly;
# - how to run the kernel on a CPU under Triton's interpreter, check it against the reference,
#   and which property test proves them equal for every shape, dtype and timestep.
#
# **Code this chapter explains:** `kernels/samplers.py` (`_ddpm_step_kernel` and its host wrapper
# `ddpm_step`), `kernels/launch.py` (launch geometry, noise choice), `kernels/runtime.py` (GPU or
# interpreter), `kernels/compile.py` (ahead-of-time PTX and its cost on paper), beside the
# reference `reference/samplers.py` and `reference/philox.py` and the torch twins
# `minidiff/samplers.py` and `minidiff/philox.py`. Traffic counter and GPU benchmark:
# `benchmarks/kernels.py`. Tests: `tests/kernels/test_samplers.py`,
# `tests/kernels/test_compile.py`, `tests/test_philox.py`.

# %%
import ast
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import minidiff
from minidiff import kernels, samplers
from minidiff import philox as torch_philox
from minidiff.data.images import save_grid
from minidiff.data.sprites import make_sprites
from minidiff.kernels import compile as aot
from minidiff.reference import philox as ref_philox
from minidiff.reference import samplers as ref
from minidiff.reference.noising import make_schedule as make_ref_schedule

from _plot import COLOURS, bar_plot
from _tutorial import OUT, SMALL, pick

ROOT = Path(minidiff.__file__).resolve().parents[1]
if SMALL:  # tiny tensors: on a busy 2-core machine a second thread only waits (see _trained.py)
    torch.set_num_threads(1)
kernels.load()  # the explicit choice, before Triton loads: this machine's GPU, or the interpreter
print("kernels run on:", kernels.runtime.backend())

# %% [markdown]
# ## The update as memory traffic
# Chapter 2's DDPM step, per element (one colour value of one pixel):
#
#     x_{t-1} = s1 * (x_t - s2 * eps) + s3 * z,   s1 = 1/sqrt(alpha_t),
#               s2 = beta_t / sqrt(1 - alpha_bar_t),   s3 = sigma_t (0 at t = 1)
#
# About 8 floating-point operations per element. A GPU can do about 20 per byte it moves (an H100's
# specification: some 67 TFLOP/s of float32 against 3.35 TB/s of memory bandwidth), and this update
# does less than one per byte, so its time is the time to move its bytes. The least it can move, in
# float32: read x_t and eps (8 bytes), write x_{t-1} (4 bytes); z need never touch memory if it is
# made where it is used. (Making z in the kernel costs arithmetic instead: ten Philox rounds, a log
# and a cosine per element; whether the kernel still runs at memory speed is for
# `benchmarks/kernels.py` to measure on a GPU.) Eager torch runs one operation at a time, and every
# operation reads its inputs from memory and writes its result back. `benchmarks/kernels.py` counts
# that with a dispatch mode (a hook on every aten operation); here it is op by op.

# %%
spec = importlib.util.spec_from_file_location("bench", ROOT / "benchmarks" / "kernels.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)  # benchmarks/ is a folder of scripts, not a package


schedule = minidiff.make_schedule()  # the course's linear schedule, T = 500, float64 tables
x_t, eps = torch.randn(32, 3, 16, 16), torch.randn(32, 3, 16, 16)
t = torch.full((32,), 300)
with bench.Traffic(min_numel=x_t.numel()) as traffic:  # traffic.log: (op, bytes per element)
    bench.eager_updates(schedule)["ddpm_step"](x_t, eps, t)
for op, nbytes in traffic.log:
    print(f"  {op:12} {nbytes:4.0f} bytes per element")
eager_bytes = traffic.bytes / x_t.numel()
print(f"eager DDPM step: {eager_bytes:.0f} bytes per element in {len(traffic.log)} passes; "
      f"minimum: 12")
assert eager_bytes >= 3 * 12  # eager torch moves several times the minimum

# %% [markdown]
# `randn_like` writes z, the first `mul` reads eps and writes s2 * eps, `sub` reads two tensors
# and writes one, and so on: every intermediate makes a round trip. (This count uses torch's own
# `randn_like`; minidiff's torch sampler draws the Philox stream of `minidiff/philox.py`, which
# makes many more passes.) A kernel that does all of it in registers moves only the 12 bytes.
#
# ## What the compiler says
# Without a GPU we can still compile the kernel for one: `kernels/compile.py` asks Triton for
# the PTX (the GPU's assembly) for sm_80 (A100) and sm_90 (H100), runs ptxas on it, and counts
# the global loads and stores that run once per element.

# %%
variants = pick(aot.VARIANTS, aot.VARIANTS[:1])  # under CI: only ddpm_step[philox, float32]
builds = aot.compile_all(variants=variants)
print(aot.report(builds))
ddpm = next(b for b in builds if b.variant == aot.Variant("ddpm_step", "float32", "philox"))
fused_bytes = sum(b for _, b in (ddpm.per_element(ddpm.loads), ddpm.per_element(ddpm.stores)))
print(f"\nthe per-element memory instructions in the sm_{ddpm.capability} PTX of "
      f"{ddpm.variant.name}:")
for line in ddpm.ptx.splitlines():
    if re.search(r"@%p\d+\s+(ld|st)\.global", line):
        print("  ", line.strip())
print(f"\nbytes per element: fused {fused_bytes:.0f}, eager {eager_bytes:.0f} "
      f"({eager_bytes / fused_bytes:.1f}x the traffic)")
assert fused_bytes == 12  # the minimum: read x_t and eps, write x_{t-1}; z never touches memory
bars = {f"{i + 1}. {op}": nbytes for i, (op, nbytes) in enumerate(traffic.log)}
bars |= {"eager, all": eager_bytes, "fused kernel": fused_bytes}
bar_plot(bars, OUT / "07_bytes.png", title="bytes moved per element by one DDPM step (float32)",
         xlabel="eager torch, operation by operation; then the totals",
         colours=[COLOURS[0]] * len(traffic.log) + [COLOURS[1], COLOURS[2]], size=(760, 400))
print("saved", OUT / "07_bytes.png")

# %% [markdown]
# Each thread handles 8 elements. `ld.global.v4.b32` loads four 32-bit words (16 bytes) at
# once, so two of them fetch a thread's 8 values of x_t and two more its 8 values of eps; two
# `st.global.v4.b32` write x_{t-1}. Nothing else touches memory per element: no z, no spills.
# `tests/kernels/test_compile.py` pins exactly these counts, so a change that breaks the
# vectorisation or adds a pass fails on any CI machine, GPU or not.
#
# ## The kernel beside its reference
# The reference is the specification (`reference/samplers.py`, float64 NumPy):

# %%
print(inspect.getsource(ref.ddpm_coefficients))
print(inspect.getsource(ref.ddpm_step))

# %% [markdown]
# and the Triton kernel (`kernels/samplers.py`). One *program* (a block of GPU threads) updates
# `BLOCK` elements of one sample, so the sample's coefficients are scalars of the program:

# %%
kernel_fn = getattr(kernels.samplers._ddpm_step_kernel, "fn", kernels.samplers._ddpm_step_kernel)
kernel_source = inspect.getsource(kernel_fn)
print(kernel_source)

# %% [markdown]
# Term by term, the lines that compute each term, pulled from the two sources:

# %%
reference_source = inspect.getsource(ref.ddpm_coefficients) + inspect.getsource(ref.ddpm_step)
reference_source = re.sub(r'"""[\s\S]*?"""', "", reference_source)  # code, not docstrings
terms = {
    "s1": r"^\s*s1 = ",
    "s2": r"^\s*s2 = ",
    "s3": r"^\s*s3 = ",
    "update": r"^\s*(return s1 \*|x_prev \+?= )",
}
for term, pattern in terms.items():
    print(f"{term}:")
    for name, source in (("reference", reference_source), ("kernel", kernel_source)):
        for line in source.splitlines():
            if re.search(pattern, line):
                print(f"  {name:9} | {line.strip()}")

# %% [markdown]
# The same names, the same order. Two differences are deliberate: the kernel loads each table
# entry with `tl.load(alpha_ptr + t)` where NumPy indexes `alpha[t]`, and it computes the
# coefficients in float64 (the tables are float64) but the per-element update in float32, which
# is what a GPU does fast. The `if NOISE` branches are `tl.constexpr`: Triton compiles one kernel
# per choice, so the "no noise" kernel has no noise code at all.
#
# How the work is split: `launch_geometry` picks `BLOCK` and the grid. For an awkward sprite of
# 3 x 29 x 29 = 2,523 elements, more than one block:

# %%
grid, block, num_warps = kernels.launch.launch_geometry(batch=3, n_per_sample=3 * 29 * 29)
print(f"3 samples of 2,523 elements: grid {grid} programs, BLOCK {block}, {num_warps} warps "
      f"({block // (32 * num_warps)} elements per thread)")

# %% [markdown]
# ## Noise made inside the kernel
# `z = tl.randn(philox_seed, offsets)`. Philox (Salmon et al. 2011) is *counter-based*: each
# random number is a pure function of a key and a counter, computed with ten rounds of integer
# multiplies and XORs, no state carried from one number to the next. So every GPU thread can make
# its own numbers independently, and anyone can recompute them. minidiff's convention
# (`reference/philox.py`): the key is (seed, step k) packed as `seed | k << 32`, the counter is
# the element's index in the batch, which is also its memory offset in the kernel.
#
# `kernels.q_sample` draws eps the same way and returns it, which lets us look at the kernel's
# noise directly and compare it with the NumPy specification and the torch twin.

# %%
seed, k = 7, 3
x0 = torch.zeros(4, 3, 16, 16)
_, eps_kernel = kernels.q_sample(x0, 1, None, schedule, seed=seed, k=k)
eps_reference = ref_philox.randn_like_step(x0.numpy(), seed, k)
eps_torch = torch_philox.randn_like_step(x0, seed, k)
print(f"philox_seed({seed}, {k}) = {ref_philox.philox_seed(seed, k):#x}")
print("kernel == reference, element for element:",
      f"{(eps_kernel.numpy() == eps_reference).mean():.1%} equal,",
      f"largest difference {np.abs(eps_kernel.numpy() - eps_reference).max():.2e}")
print("torch twin == reference:", f"{(eps_torch.numpy() == eps_reference).mean():.1%} equal,",
      f"largest difference {np.abs(eps_torch.numpy() - eps_reference).max():.2e}")
print(f"mean {eps_reference.mean():+.3f}, std {eps_reference.std():.3f} over {eps_reference.size} "
      "numbers")
_, eps_alone = kernels.q_sample(x0[:1], 1, None, schedule, seed=seed, k=k)
assert torch.equal(eps_alone[0], eps_kernel[0])  # sample 0's noise does not depend on the batch

# %% [markdown]
# The integers are bit-exact by construction. The normals go through float32 `log` and `cos`: the
# interpreter uses NumPy's, so here the kernel matches the reference exactly, while the torch twin
# uses torch's, which differ in the last bit for some numbers (the count is printed above); a GPU's
# differ too, which is why the tests compare with a tolerance. Because the counter is the element
# index, sample 0's noise is the same in a batch of 1 or of 4 (checked above), and the torch sampler
# and the fused sampler agree image for image for the same seed.
#
# ## Run the kernel on a CPU, check it against the reference
# With no GPU, `kernels/runtime.py` sets `TRITON_INTERPRET=1`: Triton then runs the kernel's
# Python body with NumPy, program by program. It is slow but computes the same thing, which is
# all a test needs. An awkward case: three samples of 3 x 29 x 29 (two blocks each, the second
# mostly masked), each at its own timestep, the last at t = 1 where no noise is added.

# %%
ref_schedule = make_ref_schedule()  # the same course schedule, as NumPy float64
g = torch.Generator().manual_seed(0)
x_t, eps = torch.randn(3, 3, 29, 29, generator=g), torch.randn(3, 3, 29, 29, generator=g)
t = torch.tensor([500, 250, 1])
got = kernels.ddpm_step(x_t, eps, t, schedule, seed=seed, k=k)  # z drawn in-kernel
z = ref_philox.randn_like_step(x_t.numpy(), seed, k)
expected = ref.ddpm_step(x_t.double().numpy(), eps.double().numpy(), t.numpy(), ref_schedule, z)
error = np.abs(got.double().numpy() - expected)
print(f"largest |kernel - reference| = {error.max():.2e} (float32 against float64), "
      f"worst at sample {np.unravel_index(error.argmax(), error.shape)[0]}")
s1, _, _ = ref.ddpm_coefficients(t.numpy(), ref_schedule)
assert np.allclose(got.numpy(), expected, atol=1e-5 * s1.max(), rtol=1e-5)  # s1 scales the error

# %% [markdown]
# ## Many steps: the fused chain and the torch chain agree
# A sampler calls the step T times. To watch a real sprite come back without a trained network,
# use an *oracle* in place of eps_theta: the noise that takes the known x0 to the current x_t,
# eps = (x_t - sqrt(alpha_bar_t) x0) / sqrt(1 - alpha_bar_t). Then run the kernel and
# `minidiff/samplers.py`'s torch step side by side from t0 down to 0, step k drawing the noise of
# `philox_seed(seed, k)` in both.

# %%
def oracle_eps(x, x0, t):
    alpha_bar_t = float(schedule.alpha_bar[t])
    return (x - alpha_bar_t**0.5 * x0) / (1 - alpha_bar_t) ** 0.5


t0 = pick(100, 8)
images, _ = make_sprites(n=pick(8, 4), seed=1)
x0 = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
start = minidiff.q_sample(x0, torch.full((len(x0),), t0), torch.randn_like(x0), schedule)
x_fused, x_torch = start.clone(), start.clone()
for k, t in enumerate(range(t0, 0, -1), start=1):
    x_fused = kernels.ddpm_step(x_fused, oracle_eps(x_fused, x0, t), t, schedule, seed=seed, k=k)
    z = torch_philox.randn_like_step(x_torch, seed, k)
    x_torch = samplers.ddpm_step(x_torch, oracle_eps(x_torch, x0, t), t, schedule, z)
difference = (x_fused - x_torch).abs().max().item()
print(f"{t0} steps: largest |fused - torch| = {difference:.2e}; "
      f"largest |result - x0| = {(x_fused - x0).abs().max():.3f}")
assert difference < 1e-4
assert (x_fused - x0).abs().mean() < (start - x0).abs().mean()  # the chain took the noise out


def difference_map(d: torch.Tensor, full: float) -> torch.Tensor:
    """|d| averaged over colour, as grey in [-1, 1]: black is 0, white is `full` or more."""
    grey = (d.abs().mean(1, keepdim=True) / full).clamp(max=1) * 2 - 1
    return grey.expand(-1, 3, -1, -1)


noise_full = float((start - x0).abs().mean(1).max())  # one scale for the two "- x0" rows
torch_full = max(float((x_fused - x_torch).abs().mean(1).max()), 1e-12)
save_grid(torch.cat([x0, start, difference_map(start - x0, noise_full), x_fused,
                     difference_map(x_fused - x0, noise_full),
                     difference_map(x_fused - x_torch, torch_full)]),
          OUT / "07_oracle_chain.png", nrow=len(x0), scale=6)
print("saved", OUT / "07_oracle_chain.png", f"(rows: x0; x_{t0}; |x_{t0} - x0|; the fused result; "
      f"|result - x0| on the same scale, white = {noise_full:.3f}; |fused - torch|, white = "
      f"{torch_full:.1e})")

# %% [markdown]
# Read the picture top down: x_{t0} looks like x0 with grain; its difference map shows the noise
# the chain has to remove; the fused result, and its difference from x0 on the *same* scale, is
# nearly black. The last row is the difference between the fused and the torch chains, scaled up
# until its largest value is white (the scale is printed): float32 rounding, spread thinly.
#
# The result lands near x0 but not on it: the course's schedule carries one extra factor in
# alpha_bar (chapter 1), so even a perfect eps leaves the last step slightly off
# (`tests/test_samplers.py`, `test_course_schedule_last_step_misses_x0_by_its_extra_factor`,
# pins by how much).
#
# ## The property test that proves them equal
# One example proves little. `tests/kernels/test_samplers.py` lets Hypothesis draw the batch
# (including 0), the per-sample shape (a scalar, a prime, a sprite, more than a block), the dtype
# (float32, float16, bfloat16), the seed, the step, the schedule (linear or cosine, any T), the
# variance, and noise drawn in-kernel or passed in, with the edge cases pinned by `@example`:

# %%
test_file = ROOT / "tests" / "kernels" / "test_samplers.py"
test_text = test_file.read_text()
(test_node,) = [node for node in ast.parse(test_text).body
                if getattr(node, "name", "") == "test_ddpm_step_matches_reference"]
first_line = min(d.lineno for d in test_node.decorator_list)
print("\n".join(test_text.splitlines()[first_line - 1 : test_node.end_lineno]))

# %% [markdown]
# Run it here, with the derandomised CI profile (`tests/conftest.py`). It needs pytest and
# Hypothesis, which the `[notebooks]` extra installs beside the notebook tools (as `[test]` does):

# %%
result = subprocess.run(
    [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
     f"{test_file}::test_ddpm_step_matches_reference"],
    cwd=ROOT, env={**os.environ, "HYPOTHESIS_PROFILE": "ci"},
    capture_output=True, text=True, timeout=300, check=False,
)
summary = (result.stdout.strip() or result.stderr.strip() or "no output").splitlines()[-1]
print(summary)
assert result.returncode == 0, (result.stdout + result.stderr)[-2000:]

# %% [markdown]
# ## And on a GPU?
# On a GPU the same wrapper launches the compiled kernel, and `python benchmarks/kernels.py`
# times it against eager torch and `torch.compile` in GB/s of the minimum traffic (its results
# are kept in `benchmarks/RESULTS.md`). What this run could measure:

# %%
if torch.cuda.is_available():
    cuda_schedule = minidiff.make_schedule(device="cuda")
    x = torch.randn(1024, 3, 16, 16, device="cuda")
    e, tt = torch.randn_like(x), torch.full((1024,), 300, device="cuda")
    nbytes = 12 * x.numel()
    fused_rate = bench.gbps(bench.fused_updates(cuda_schedule)["ddpm_step"], (x, e, tt), nbytes)
    eager_rate = bench.gbps(bench.eager_updates(cuda_schedule)["ddpm_step"], (x, e, tt), nbytes)
    print(f"{torch.cuda.get_device_name()}, 1024 sprites: fused {fused_rate:.0f} GB/s, "
          f"eager {eager_rate:.0f} GB/s of the minimum traffic ({fused_rate / eager_rate:.1f}x)")
else:
    print("No CUDA device on this machine, so no GPU timings here. On paper, from the PTX above:")
    print(f"  fused {fused_bytes:.0f} B per element, eager {eager_bytes:.0f} B: a step limited by "
          f"memory bandwidth can be at most {eager_bytes / fused_bytes:.1f}x faster fused.")
print(f"  kernel launches per step: fused 1, eager {len(traffic.log)}")

# %% [markdown]
# The bandwidth ratio is what large tensors can gain. A batch of 32 sprites is only 24,576
# elements (about 100 KB per tensor): there the fixed cost of launching each kernel weighs more
# than the bytes, and the saving that matters is the number of launches printed above.
#
# **Next:** chapter 8 trains on your own sprites.

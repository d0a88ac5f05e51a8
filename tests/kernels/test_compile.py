"""Ahead-of-time compilation for sm_80 and sm_90 (no GPU needed), and the cost the PTX shows.

The fused kernels exist to move each element's bytes once: these tests pin that on paper, so a
change that breaks vectorisation (16-byte `ld.global.v4`) or adds a pass fails here on any CI.
"""

import pytest

from minidiff.kernels import compile as aot


@pytest.fixture(scope="module")
def builds():
    return aot.compile_all()  # every variant x (sm_80, sm_90), in one subprocess


def test_every_variant_compiles_to_ptx_and_cubin_for_each_gpu(builds):
    assert {(b.variant, b.capability) for b in builds} == {
        (v, c) for v in aot.VARIANTS for c in aot.CAPABILITIES
    }
    for b in builds:
        assert f".target sm_{b.capability}" in b.ptx, b.variant.name
        assert b.cubin_bytes > 0 and b.registers > 0, b.variant.name


def test_step_kernel_reads_x_and_eps_once_and_writes_once_in_16_byte_vectors(builds):
    for b in builds:
        if b.variant == aot.Variant("ddpm_step", "float32", "philox"):
            # 8 float32 per thread: two ld.global.v4 for each of x_t and eps, two st.global.v4
            assert b.loads == {"ld.global.v4.b32": 4} and b.stores == {"st.global.v4.b32": 2}
            assert b.per_element(b.loads) == (2.0, 8.0)
            assert b.per_element(b.stores) == (1.0, 4.0)


def test_every_kernel_moves_the_minimum_bytes_vectorised_without_spills(builds):
    for b in builds:
        moved = b.per_element(b.loads)[1] + b.per_element(b.stores)[1]
        assert moved == b.variant.min_bytes_per_element(), b.variant.name
        assert b.vectorised, f"{b.variant.name} sm_{b.capability}: {b.loads} {b.stores}"
        assert b.spill_stores == b.spill_loads == 0, b.variant.name


def test_report_has_a_line_per_build(builds):
    assert len(aot.report(builds).splitlines()) == len(builds) + 3

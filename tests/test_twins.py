"""One name, one contract in every layer: the torch twins and the kernels take the reference's
parameters, by introspection.

Every public function of reference/schedules.py, reference/noising.py and reference/samplers.py
has a twin of the same name in minidiff.noising / .noising / .samplers whose parameters are the
reference's, in the reference's order (the glossary in reference/__init__.py names them). The
kernels' wrappers take the reference's parameters first, then only keyword-only extras of their
own (seed=, k=, out=).
"""

import importlib.util
import inspect

import pytest

from minidiff import dpm_solver, noising, samplers
from minidiff.reference import dpm_solver as ref_dpm_solver
from minidiff.reference import noising as ref_noising
from minidiff.reference import samplers as ref_samplers

TWINS = [(ref_noising, noising), (ref_samplers, samplers), (ref_dpm_solver, dpm_solver)]
# Torch-only trailing parameters, each with its reason.
TORCH_ONLY = {"make_schedule": ["device"]}  # where the tables live; NumPy has one place
# What a kernel wrapper may add after the reference's parameters, keyword-only.
KERNEL_ONLY = {"seed", "k", "out", "x0_theta_out"}  # in-kernel noise, its index k, outputs


def public_functions(module) -> dict:
    """The functions a module defines (not imports) and does not mark private."""
    return {
        name: value
        for name, value in vars(module).items()
        if inspect.isfunction(value) and not name.startswith("_")
        and value.__module__ == module.__name__
    }


def parameter_names(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_the_reference_modules_have_functions_to_twin():
    for ref_module, _ in TWINS:
        assert public_functions(ref_module), ref_module.__name__


@pytest.mark.parametrize("ref_module, torch_module", TWINS, ids=lambda m: m.__name__)
def test_every_reference_function_has_a_torch_twin_with_its_parameters(ref_module, torch_module):
    for name, reference in public_functions(ref_module).items():
        twin = getattr(torch_module, name, None)
        assert callable(twin), f"{torch_module.__name__}.{name}: no twin of the reference's"
        expected = parameter_names(reference) + TORCH_ONLY.get(name, [])
        assert parameter_names(twin) == expected, (
            f"{torch_module.__name__}.{name}{inspect.signature(twin)} does not take the "
            f"parameters of {ref_module.__name__}.{name}{inspect.signature(reference)}"
        )


needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="the kernels need Triton")


@needs_triton
@pytest.mark.parametrize("name, reference", [
    ("ddpm_step", ref_samplers.ddpm_step),
    ("ddim_step", ref_samplers.ddim_step),
    ("q_sample", ref_noising.q_sample),
])  # fmt: skip
def test_kernel_wrappers_take_the_reference_parameters_then_keyword_extras(name, reference):
    from minidiff import kernels

    wrapper = getattr(kernels.load(), name)
    parameters = list(inspect.signature(wrapper).parameters.values())
    expected = parameter_names(reference)
    got = [p.name for p in parameters[: len(expected)]]
    assert got == expected, f"minidiff.kernels.{name}{inspect.signature(wrapper)}"
    for extra in parameters[len(expected):]:
        assert extra.kind is inspect.Parameter.KEYWORD_ONLY, f"{name}: {extra.name} is positional"
        assert extra.name in KERNEL_ONLY, f"{name}: {extra.name} is not one of {KERNEL_ONLY}"

"""Builds the optional one-pass block kernel (plain C, no torch headers, so no torch at build time).

``optional=True``: without a working C compiler the package installs all the same and
``dora_diag.metrics.fused`` falls back to the unfused kernel, same numbers (``dora-diag --debug`` says so).
Everything else is in pyproject.toml.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("dora_diag.metrics._fused", ["src/dora_diag/metrics/_fused.c"],
                             extra_compile_args=["-O3"], optional=True)])

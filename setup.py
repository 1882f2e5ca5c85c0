"""The compiled helpers (neurorecon/_native.c): optional, so that an install without a C compiler
still works (neurorecon then uses its numpy code paths; see neurorecon.native)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("neurorecon._native", ["src/neurorecon/_native.c"], optional=True,
                             extra_compile_args=["-O2", "-ffp-contract=off"])])

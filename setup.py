"""Build of the optional compiled kernel; everything else is declared in setup.cfg.

``mpi_sgd.model._fused`` (one C file, no dependency beyond the Python headers) fuses a full
pass of the binary logistic loss. ``optional=True``: without a C compiler the build warns and
installs the pure-Python package, which then uses its numpy pass (docs/algorithm.md).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "mpi_sgd.model._fused",
            ["mpi_sgd/model/_fused.c"],
            # -fopenmp-simd: the pragmas vectorise the row's dot product and update without
            # -ffast-math (no other reassociation) and without linking an OpenMP runtime;
            # -fno-trapping-math lets branch-free selects (exp_neg's clamp) vectorise: the
            # kernels never read the floating-point exception flags
            extra_compile_args=["-O3", "-fopenmp-simd", "-fno-trapping-math"],
            optional=True,
        )
    ]
)

"""Build the compiled parts of fastgw.

One Extension per .pyx file. ``FASTGW_DEBUG_BUILD=1`` builds with line tracing off, asserts on and
writes ``cython -a`` annotation HTML next to the source, to check that the hot functions stay
free of Python-object work.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTGW_DEBUG_BUILD") == "1"

extensions = [
    Extension(
        "fastgw._router",
        ["src/fastgw/_router.pyx"],
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O2"],
    ),
    Extension(
        "fastgw._proxy",
        ["src/fastgw/_proxy.pyx"],
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O2"],
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        include_path=["src"],  # _proxy cimports fastgw._router
        annotate=DEBUG,
        compiler_directives={
            "boundscheck": DEBUG,
            "wraparound": False,
            "initializedcheck": DEBUG,
            "cdivision": True,
            "embedsignature": True,
        },
    ),
)

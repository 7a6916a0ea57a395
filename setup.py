"""Build the compiled parts of fastgw.

One Extension per .pyx file (the proxy's core, and the plugins' per-request paths that every
rate-limited or authenticated request runs); ``fastgw.http._parser`` also compiles llhttp (``vendor/llhttp``, MIT, the
parser inside httptools and Node.js) so that its callbacks can be C functions. ``FASTGW_DEBUG_BUILD=1`` builds with line tracing off, asserts on and
writes ``cython -a`` annotation HTML next to the source, to check that the hot functions stay
free of Python-object work.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTGW_DEBUG_BUILD") == "1"

FLAGS = ["-O0", "-g"] if DEBUG else ["-O2"]
LLHTTP = "vendor/llhttp"

extensions = [
    Extension(
        "fastgw.http._parser",
        ["src/fastgw/http/_parser.pyx", *(f"{LLHTTP}/src/{name}.c" for name in ("llhttp", "api", "http"))],
        include_dirs=[f"{LLHTTP}/include"],
        extra_compile_args=FLAGS,
    ),
    Extension(
        "fastgw.http._clock",
        ["src/fastgw/http/_clock.pyx"],
        extra_compile_args=FLAGS,
    ),
    Extension(
        "fastgw._router",
        ["src/fastgw/_router.pyx"],
        extra_compile_args=FLAGS,
    ),
    Extension(
        "fastgw.plugins.ratelimit.algorithms",
        ["src/fastgw/plugins/ratelimit/algorithms.pyx"],
        extra_compile_args=FLAGS,
    ),
    Extension(
        "fastgw.plugins.ratelimit.admission",
        ["src/fastgw/plugins/ratelimit/admission.pyx"],
        extra_compile_args=FLAGS,
    ),
    Extension(
        "fastgw.plugins._credentials",
        ["src/fastgw/plugins/_credentials.pyx"],
        extra_compile_args=FLAGS,
    ),
    Extension(
        "fastgw._proxy",
        ["src/fastgw/_proxy.pyx"],
        include_dirs=[f"{LLHTTP}/include"],  # reads llhttp_t fields; calls no llhttp function
        extra_compile_args=FLAGS,
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        include_path=["src"],  # _proxy cimports fastgw._router and fastgw.http._parser
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

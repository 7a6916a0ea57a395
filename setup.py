"""Build the compiled parts of fastgw.

One Extension per .pyx file (the proxy's core, and the plugins' per-request paths that every
rate-limited or authenticated request, or cache hit, runs); ``fastgw.http._parser`` also compiles llhttp (``vendor/llhttp``, MIT, the
parser inside httptools and Node.js) so that its callbacks can be C functions, and ``fastgw._proxy``
compiles nghttp2's library (``vendor/nghttp2``, MIT, the HTTP/2 framing curl and Apache use) for
the same reason: a fresh machine needs only a C compiler. ``FASTGW_DEBUG_BUILD=1`` builds with line tracing off, asserts on and
writes ``cython -a`` annotation HTML next to the source, to check that the hot functions stay
free of Python-object work.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTGW_DEBUG_BUILD") == "1"

FLAGS = ["-O0", "-g"] if DEBUG else ["-O2"]
LLHTTP = "vendor/llhttp"
NGHTTP2 = "vendor/nghttp2"
NGHTTP2_SOURCES = sorted(f"{NGHTTP2}/lib/{name}" for name in os.listdir(f"{NGHTTP2}/lib") if name.endswith(".c"))
# The C headers fastgw._proxy's declarations need, for the plugin modules that cimport it
PROXY_HEADERS = [f"{LLHTTP}/include", f"{NGHTTP2}/include", f"{NGHTTP2}/lib"]

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
        # cimports fastgw._proxy (reads the exchange's C fields): its headers come along
        include_dirs=PROXY_HEADERS,
        extra_compile_args=FLAGS,
    ),
    Extension(
        "fastgw.plugins.cache.hits",
        ["src/fastgw/plugins/cache/hits.pyx"],
        extra_compile_args=FLAGS,
    ),
    Extension(
        "fastgw.plugins._credentials",
        ["src/fastgw/plugins/_credentials.pyx"],
        include_dirs=PROXY_HEADERS,  # as admission's
        extra_compile_args=FLAGS,
    ),
    Extension(
        "fastgw.observe._access_log",
        ["src/fastgw/observe/_access_log.pyx"],
        # cimports fastgw._proxy (reads the exchange's C fields): its headers come along
        include_dirs=[f"{LLHTTP}/include", f"{NGHTTP2}/include", f"{NGHTTP2}/lib"],
        extra_compile_args=FLAGS,
    ),
    Extension(
        "fastgw._proxy",
        ["src/fastgw/_proxy.pyx", *NGHTTP2_SOURCES],
        # llhttp: reads llhttp_t fields, calls no llhttp function; nghttp2: compiled in, static
        include_dirs=[f"{LLHTTP}/include", f"{NGHTTP2}/include", f"{NGHTTP2}/lib"],
        define_macros=[("NGHTTP2_STATICLIB", None), ("HAVE_ARPA_INET_H", None), ("HAVE_NETINET_IN_H", None)],
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

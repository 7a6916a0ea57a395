"""Wire bytes written by the compiled writers (``proxy/render.pyx``): a chunk's size line is
``%x`` of its size, lower case, for widths odd and even (the writer puts two hex digits a step,
and the leading one alone when the width is odd), up to the largest size."""

from __future__ import annotations

import pytest

from fastgw._proxy import render_chunk_header

SIZES = [0, 1, 9, 10, 15, 16, 17, 255, 256, 4095, 4096, 65535, 65536, 0xABCDEF, 2**40 + 5, 2**63 - 1]


@pytest.mark.parametrize("size", SIZES)
def test_a_chunk_size_line_is_its_size_in_lower_case_hex(size: int) -> None:
    assert render_chunk_header(size) == b"%x\r\n" % size

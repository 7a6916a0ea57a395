"""HTTP facts anyone in fastgw may import, and which import nothing else of fastgw.

``wire``: status lines, the hop-by-hop set, the idempotent methods, error and response rendering;
``limits``: the request checks llhttp leaves to us and the one path normalization; ``faults``:
failures answered on the wire; ``_parser``: llhttp driven from C; ``_clock``: the clocks, the
Date line and the timer wheel deadlines are filed on.
"""

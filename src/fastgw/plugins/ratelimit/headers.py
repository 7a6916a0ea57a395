"""The header styles a rate limit can tell clients in (the fields are rendered by
``admission.HeaderRenderer``, compiled, which documents each style): ``draft`` (the IETF
httpapi working group's current form, the default), ``legacy`` (the earlier drafts'
``RateLimit-Limit``/``-Remaining``/``-Reset``) and ``x`` (the de-facto ``X-RateLimit-*``).
"""

from __future__ import annotations

from fastgw.config.validate import read_list, read_one_of

STYLES = ("draft", "legacy", "x")
read_styles = read_list(read_one_of("a header style", STYLES), single=True)

Headers = list[tuple[bytes, bytes]]

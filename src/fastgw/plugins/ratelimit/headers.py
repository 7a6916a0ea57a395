"""The response fields that tell a client about its rate limit.

``draft`` (the default) is the IETF httpapi working group's current form
(draft-ietf-httpapi-ratelimit-headers-10/-11), two structured-field lists:

    RateLimit-Policy: "per-ip";q=100;w=60      the policy: quota q per window of w seconds
    RateLimit: "per-ip";r=42;t=17              this client: r left, for the next t seconds

``legacy`` is the earlier drafts' ``RateLimit-Limit``/``-Remaining``/``-Reset`` (delta seconds),
``x`` the de-facto ``X-RateLimit-Limit``/``-Remaining``/``-Reset`` (delta seconds, not a date).
A 429 also carries ``Retry-After`` (whole seconds, at least 1), and its ``t`` is the same, so the
client is never told to come back earlier than it may.
"""

from __future__ import annotations

from fastgw.config.validate import read_list, read_one_of

STYLES = ("draft", "legacy", "x")
read_styles = read_list(read_one_of("a header style", STYLES), single=True)

Headers = list[tuple[bytes, bytes]]


class HeaderRenderer:
    """Renders the chosen header styles for one policy (the constant parts encoded once)."""

    __slots__ = ("_draft", "_legacy", "_limit", "_name", "_policy", "_x")

    def __init__(self, name: str, limit: int, window: int, styles: tuple[str, ...]) -> None:
        self._name = b'"' + name.encode() + b'"'
        self._limit = str(limit).encode()
        self._policy = (b"RateLimit-Policy", self._name + b";q=%d;w=%d" % (limit, window))
        self._draft = "draft" in styles
        self._legacy = "legacy" in styles
        self._x = "x" in styles

    def __bool__(self) -> bool:
        return self._draft or self._legacy or self._x

    def render(self, remaining: int, reset: int, into: Headers) -> Headers:
        """Append the fields for ``remaining`` requests left and ``reset`` seconds to ``into``."""
        if self._draft:
            into.append(self._policy)
            into.append((b"RateLimit", self._name + b";r=%d;t=%d" % (remaining, reset)))
        if self._legacy or self._x:
            left = b"%d" % remaining
            seconds = b"%d" % reset
            if self._legacy:
                into.append((b"RateLimit-Limit", self._limit))
                into.append((b"RateLimit-Remaining", left))
                into.append((b"RateLimit-Reset", seconds))
            if self._x:
                into.append((b"X-RateLimit-Limit", self._limit))
                into.append((b"X-RateLimit-Remaining", left))
                into.append((b"X-RateLimit-Reset", seconds))
        return into

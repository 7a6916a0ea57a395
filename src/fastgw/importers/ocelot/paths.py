"""Ocelot's path templates as fastgw paths, and where the two routers would pick differently.

Ocelot turns ``UpstreamPathTemplate`` into a regular expression (``UpstreamTemplatePatternCreator``):

- a placeholder followed by a ``/`` is ``[^/]+``: one non-empty segment, fastgw's ``{name}``;
- a placeholder with no ``/`` after it is ``.*``: the rest of the path, slashes included, possibly
  empty, whatever its name: fastgw's ``{*name}``. When it starts the last segment Ocelot also
  matches the path without that segment (``/products/{id}`` matches ``/products``, since 23.0),
  which fastgw's catch-all does not: that form becomes a second path, a *variant*;
- ``/{x}`` alone matches every path and has priority 0 whatever the file says;
- a template ending in ``/`` matches with and without the slash (two variants), as does one with a
  query part (``?``, ``/?``); ``?k={v}`` requires the parameter ``k`` (a fastgw query predicate)
  and ``?{q}`` takes any query string;
- matching ignores case unless ``RouteIsCaseSensitive``; fastgw compares path text exactly.

Placeholders embedded in a segment with other text (``/v{version}/``, ``/{file}.json``) have no
fastgw form: such a route is not translated.

Route choice. Ocelot tries the routes of the request's method in ``Priority`` order (highest first,
file order within a priority) and takes the first whose expression matches; a route with an
``UpstreamHost`` beats host-less ones. fastgw's router goes segment by segment and prefers static
text to a parameter to a catch-all; ``priority`` only orders routes of the same shape. So routes
of one shape get fastgw priorities in Ocelot's order, and ``compare`` finds pairs of routes whose
shapes differ where both match one request and fastgw would take the later one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "Downstream",
    "Overlap",
    "PathVariant",
    "UpstreamTemplate",
    "compare",
    "covers",
    "parse_upstream",
    "translate_downstream",
]

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_WHOLE = re.compile(r"\{([^{}/]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QUERY_PAIR = re.compile(r"([^=&{}]+)=(?:\{([^{}]*)\}|([^&{}]*))")

# A segment of a fastgw path for the overlap analysis: ("s", text) static text, ("p", "") one
# non-empty segment, ("r", "") the rest of the path (at least one segment, possibly empty).
Segment = tuple[str, str]


@dataclass(frozen=True, slots=True)
class PathVariant:
    """One fastgw path of an Ocelot template: the first is the template's own form."""

    path: str  # "/api/products/{*id}"
    segments: tuple[Segment, ...]
    empty: tuple[str, ...] = ()  # Ocelot placeholders this form matches as "" (not fastgw params)


@dataclass(frozen=True, slots=True)
class UpstreamTemplate:
    template: str
    variants: tuple[PathVariant, ...]
    names: dict[str, str]  # Ocelot placeholder -> fastgw parameter name (path placeholders)
    query_names: dict[str, str]  # Ocelot placeholder -> the query parameter it takes ("?k={v}")
    query_required: tuple[tuple[str, str], ...]  # fastgw query predicates: (name, value or "")
    catch_all: str | None  # the path placeholder that takes the rest of the path
    forced_priority: int | None  # 0 for "/{x}"
    case_matters: bool  # static text has letters: case-insensitive matching would differ

    @property
    def label(self) -> str:
        return self.template


def _param_name(placeholder: str, taken: set[str]) -> str:
    """A fastgw parameter name for an Ocelot placeholder (Ocelot's may be any text)."""
    name = placeholder if _NAME.fullmatch(placeholder) else re.sub(r"\W", "_", placeholder) or "param"
    if name[0].isdigit():
        name = f"_{name}"
    base, n = name, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def _segments(path: str) -> tuple[Segment, ...]:
    parts = path[1:].split("/") if path != "/" else [""]
    found: list[Segment] = []
    for part in parts:
        if part.startswith("{*"):
            found.append(("r", ""))
        elif part.startswith("{"):
            found.append(("p", ""))
        else:
            found.append(("s", part))
    return tuple(found)


def _variant(path: str, empty: tuple[str, ...] = ()) -> PathVariant:
    return PathVariant(path, _segments(path), empty)


def parse_upstream(template: str) -> UpstreamTemplate | str:
    """The fastgw form of an ``UpstreamPathTemplate``, or why there is none."""
    if not template.startswith("/"):
        return "the template must start with '/' (Ocelot refuses it too)"
    if any(c in template for c in " #\r\n\t"):
        return "spaces, '#' and control characters cannot be matched in a path"
    path, question, query = template.partition("?")
    if re.fullmatch(r"/\{[^{}/]*\}", template):
        name = _param_name(template[2:-1], set())
        return UpstreamTemplate(
            template, (_variant(f"/{{*{name}}}"),), {template[2:-1]: name}, {}, (), template[2:-1], 0, False
        )
    taken: set[str] = set()
    names: dict[str, str] = {}
    parts = path[1:].split("/")
    last_is_slash = len(parts) > 1 and parts[-1] == ""
    fastgw_parts: list[str] = []
    catch_all: str | None = None
    for index, part in enumerate(parts):
        whole = _WHOLE.fullmatch(part)
        if "{" not in part and "}" not in part:
            fastgw_parts.append(part)
            continue
        if whole is None:
            return (
                f"segment {part!r} mixes placeholders with other text; fastgw matches a parameter to a"
                " whole segment"
            )
        placeholder = whole[1]
        if placeholder in names:
            return f"placeholder {{{placeholder}}} appears twice"
        names[placeholder] = _param_name(placeholder, taken)
        if index == len(parts) - 1:  # no '/' after it: the rest of the path, Ocelot's ".*"
            catch_all = placeholder
            fastgw_parts.append(f"{{*{names[placeholder]}}}")
        else:
            fastgw_parts.append(f"{{{names[placeholder]}}}")
    main = "/" + "/".join(fastgw_parts)
    variants = [_variant(main)]
    if catch_all is not None and not question:
        # "(?:|/.*)": the path without its last segment matches too, the placeholder empty.
        variants.append(_variant(main.rsplit("/", 1)[0] or "/", (catch_all,)))
    elif catch_all is None and main != "/" and (last_is_slash or question):
        # "(/|)" and "(/$|/\?|\?|$)": with or without a trailing slash.
        other = main.rstrip("/") if main.endswith("/") else main + "/"
        variants.append(_variant(other or "/"))
    query_names: dict[str, str] = {}
    required: list[tuple[str, str]] = []
    if question and not re.fullmatch(r"\{[^{}]*\}", query):
        for pair in query.split("&"):
            match = _QUERY_PAIR.fullmatch(pair)
            if match is None:
                return f"query part {pair!r} is not name={{placeholder}} or name=value"
            if match[2] is not None:
                query_names[match[2]] = match[1]
                required.append((match[1], ""))
            else:
                required.append((match[1], match[3]))
    case_matters = any(kind == "s" and re.search(r"[A-Za-z]", text) for kind, text in variants[0].segments)
    return UpstreamTemplate(
        template, tuple(variants), names, query_names, tuple(required), catch_all, None, bool(case_matters)
    )


@dataclass(frozen=True, slots=True)
class Downstream:
    """A ``DownstreamPathTemplate`` for one variant: the fastgw ``rewrite`` (None when the path is
    sent as it came) and the query edits Ocelot's downstream query part makes."""

    rewrite: str | None
    query_set: dict[str, str]  # parameter -> fastgw template ("{param.unit}" or literal text)
    query_rename: dict[str, str]  # upstream query parameter -> downstream name


def _literal(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def translate_downstream(template: str, upstream: UpstreamTemplate, variant: PathVariant) -> Downstream | str:
    """The rewrite and query edits of ``template`` for requests matching ``variant``, or why
    they cannot be expressed."""
    if not template.startswith("/"):
        return "the DownstreamPathTemplate must start with '/'"
    path, question, query = template.partition("?")
    problem: str | None = None

    def substitute(match: re.Match[str]) -> str:
        nonlocal problem
        name = match[1]
        if name in variant.empty:
            return ""
        if name in upstream.names:
            return f"{{{upstream.names[name]}}}"
        if name in upstream.query_names:
            problem = (
                f"{{{name}}} comes from the query string; fastgw rewrites paths from path parameters only"
            )
        else:
            problem = f"{{{name}}} is not a placeholder of the UpstreamPathTemplate"
        return ""

    rewrite = _PLACEHOLDER.sub(substitute, path)
    if problem:
        return problem
    if any(c in rewrite for c in " #\r\n\t"):
        return "spaces, '#' and control characters cannot be sent in a path"
    if variant.empty and rewrite.endswith("/") and not variant.path.endswith("/") and rewrite != "/":
        rewrite = rewrite.rstrip("/")  # Ocelot drops the slash an empty placeholder leaves
    as_sent = re.sub(r"\{\*", "{", variant.path)
    query_set: dict[str, str] = {}
    query_rename: dict[str, str] = {}
    if question and not re.fullmatch(r"\{[^{}]*\}", query):
        for pair in query.split("&"):
            match = _QUERY_PAIR.fullmatch(pair)
            if match is None:
                return f"query part {pair!r} is not name={{placeholder}} or name=value"
            name, placeholder, value = match[1], match[2], match[3]
            if placeholder is None:
                query_set[name] = _literal(value)
            elif placeholder in upstream.names:
                if placeholder in variant.empty:
                    query_set[name] = ""
                else:
                    query_set[name] = f"{{param.{upstream.names[placeholder]}}}"
            elif placeholder in upstream.query_names:
                source = upstream.query_names[placeholder]
                if source == name:
                    continue  # the parameter goes on as it came
                if source != placeholder:
                    return (
                        f"{name}={{{placeholder}}} copies query parameter {source!r} under another name while"
                        " keeping it; fastgw's query edits can only rename it (name the placeholder"
                        f" {{{source}}} to rename)"
                    )
                query_rename[source] = name
            else:
                return f"{{{placeholder}}} is not a placeholder of the UpstreamPathTemplate"
    return Downstream(None if rewrite == as_sent else rewrite, query_set, query_rename)


# -- which router picks which route --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Overlap:
    """Some request path matches both patterns: ``example``; fastgw's router prefers ``winner``
    ("a" or "b"), or neither when both have the same shape (then priority decides)."""

    winner: str | None
    example: str


def compare(a: tuple[Segment, ...], b: tuple[Segment, ...]) -> Overlap | None:
    """Whether a path matches both ``a`` and ``b``, and which fastgw's router would take."""
    winner: str | None = None
    example: list[str] = []
    for index in range(max(len(a), len(b))):
        if index >= len(a) or index >= len(b):
            return None  # one pattern ended; the other needs at least one more segment
        (kind_a, text_a), (kind_b, text_b) = a[index], b[index]
        if "r" in (kind_a, kind_b):
            if kind_a != kind_b:
                winner = winner or ("b" if kind_a == "r" else "a")
                rest = b[index:] if kind_a == "r" else a[index:]
                example += [text if kind == "s" else "x" for kind, text in rest]
            else:
                example.append("x")
            return Overlap(winner, "/" + "/".join(example))
        if kind_a == kind_b == "s":
            if text_a != text_b:
                return None
            example.append(text_a)
        elif "s" in (kind_a, kind_b):
            text = text_a if kind_a == "s" else text_b
            if not text:
                return None  # a parameter never matches an empty segment
            winner = winner or ("a" if kind_a == "s" else "b")
            example.append(text)
        else:
            example.append("x")
    return Overlap(winner, "/" + "/".join(example))


def covers(a: tuple[Segment, ...], b: tuple[Segment, ...]) -> bool:
    """Does every path that matches ``b`` match ``a``?"""
    for index, (kind_b, text_b) in enumerate(b):
        if index >= len(a):
            return False
        kind_a, text_a = a[index]
        if kind_a == "r":
            return True
        if kind_b == "r":
            return False
        if kind_a == "s" and (kind_b != "s" or text_a != text_b):
            return False
        if kind_a == "p" and kind_b == "s" and not text_b:
            return False
    return len(a) == len(b)

"""Keep Ocelot's choice of route where fastgw's router would choose differently.

Ocelot takes the first matching route in ``Priority`` order (file order within a priority);
fastgw's router takes the most specific shape and uses ``priority`` only between routes of one
shape (``paths``). For every pair of routes that can answer one request (same host, a method in
common), in Ocelot's order, A before B:

- same shape: fastgw ``priority`` values in Ocelot's order settle it;
- B's every path is matched by A (and A has no header or query predicate): Ocelot never reaches B.
  B is left out, which keeps Ocelot's behaviour exactly, and the report says so;
- some request matches both and fastgw prefers B (a more specific shape): the report names such a
  request and how to make both gateways agree.
"""

from __future__ import annotations

from typing import Any

from fastgw.importers.ocelot.paths import compare, covers
from fastgw.importers.ocelot.report import Report
from fastgw.importers.ocelot.routes import RouteDraft

__all__ = ["order_routes"]


def _methods_meet(a: tuple[str, ...] | None, b: tuple[str, ...] | None) -> bool:
    return a is None or b is None or bool(set(a) & set(b))


def _methods_cover(a: tuple[str, ...] | None, b: tuple[str, ...] | None) -> bool:
    return a is None or (b is not None and set(b) <= set(a))


def _where(draft: RouteDraft) -> str:
    return f"{draft.obj.file}: {draft.obj.path} ({draft.label})"


def order_routes(drafts: list[RouteDraft], report: Report) -> None:
    """Set fastgw priorities, leave out what Ocelot never reaches, report what differs."""
    ordered = sorted(drafts, key=lambda d: (-d.priority, d.order))
    for later_index, b in enumerate(ordered):
        for a in ordered[:later_index]:
            if a.left_out or b.left_out or a.host != b.host or not _methods_meet(a.methods, b.methods):
                continue
            variants_a = a.template.variants[: len(a.routes)]
            variants_b = b.template.variants[: len(b.routes)]
            shadowed = (
                not a.predicates
                and _methods_cover(a.methods, b.methods)
                and all(any(covers(va.segments, vb.segments) for va in variants_a) for vb in variants_b)
            )
            if shadowed:
                b.left_out = True
                report.head(b.obj.file, b.obj.path, f"{b.label}: left out")
                report.unsupported(
                    b.obj.file,
                    b.obj.path,
                    f"never reached in Ocelot: {_where(a)} comes first and matches every request this route"
                    " matches; left out, as Ocelot never used it (give it a higher Priority in Ocelot to"
                    " use it)",
                )
                break
            for va in variants_a:
                for vb in variants_b:
                    overlap = compare(va.segments, vb.segments)
                    if overlap is None or overlap.winner != "b":
                        continue
                    report.approximated(
                        b.obj.file,
                        b.obj.at("Priority"),
                        f"a request like {overlap.example} matches this route and {_where(a)}: Ocelot"
                        " takes the"
                        " other (it comes first in Priority order), fastgw's router this one (the more"
                        " specific"
                        " path). To agree, give this route the higher Priority in Ocelot, or remove it",
                    )
                    break
                else:
                    continue
                break
    _assign_priorities([d for d in ordered if not d.left_out])


def _shape(route: dict[str, Any], draft: RouteDraft) -> tuple[object, ...]:
    variant = next(v for v, r in zip(draft.template.variants, draft.routes, strict=False) if r is route)
    return (draft.host, variant.segments)


def _assign_priorities(ordered: list[RouteDraft]) -> None:
    """Routes of one shape and host get priorities in Ocelot's order (the first the highest)."""
    groups: dict[tuple[object, ...], list[dict[str, Any]]] = {}
    for draft in ordered:
        for route in draft.routes:
            groups.setdefault(_shape(route, draft), []).append(route)
    for routes in groups.values():
        if len(routes) < 2:
            continue
        for rank, route in enumerate(routes):
            route["priority"] = len(routes) - 1 - rank

"""The bundled e-commerce demo: four services (``fastgw.demo.services``) behind ``gateway.yaml``.

This module stays import-light (no aiohttp) so the CLI can list what to try without starting
anything.

Registry mode (``fastgw demo --registry URL``): the services register themselves in etcd
(``fastgw.demo.registration``), and the gateway runs ``registry_document`` of ``gateway.yaml``:
the same listeners and routes, each upstream following its service's key prefix by etcd
discovery instead of the static targets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

__all__ = [
    "CONFIG_PATH",
    "REGISTRY_PREFIX",
    "demo_urls",
    "instance_key",
    "live_url",
    "mobile_urls",
    "port_env",
    "registry_document",
    "service_prefix",
]

CONFIG_PATH = os.path.join(os.path.dirname(__file__), "gateway.yaml")
"""The demo gateway configuration; it reads the variables that ``port_env`` returns."""


def port_env(ports: Mapping[str, int]) -> dict[str, str]:
    """``{"catalog": 1234, ...}`` -> ``{"CATALOG_PORT": "1234", ...}`` for ``gateway.yaml``."""
    return {f"{name.upper()}_PORT": str(port) for name, port in ports.items()}


REGISTRY_PREFIX = "/fastgw-demo/"
"""Where the demo services register in etcd: one prefix per service below it."""


def service_prefix(name: str) -> str:
    """The etcd key prefix the instances of service ``name`` register under."""
    return f"{REGISTRY_PREFIX}{name}/"


def instance_key(name: str, host: str, port: int) -> str:
    """The etcd key of one instance: its service's prefix and its address."""
    return f"{service_prefix(name)}{host}:{port}"


def registry_document(document: Mapping[str, Any], endpoint: str) -> dict[str, Any]:
    """``gateway.yaml``'s parsed ``document`` in registry mode: each upstream (named after its
    service) takes its targets from etcd at ``endpoint``, under ``service_prefix(name)``, instead
    of its static ``targets``. Listeners, routes and the upstreams' other keys stay as they are."""
    upstreams = {
        name: {
            **{key: value for key, value in upstream.items() if key != "targets"},
            "discovery": {"provider": "etcd", "prefix": service_prefix(name)},
        }
        for name, upstream in document["upstreams"].items()
    }
    return {**document, "registries": {"etcd": {"endpoints": [endpoint]}}, "upstreams": upstreams}


def demo_urls(base: str) -> list[str]:
    """What to try against the demo gateway at ``base`` (``http://127.0.0.1:8080``), in order.

    Plain URLs are GETs that answer 2xx on a freshly started demo (``fastgw demo --smoke`` fetches
    them); anything else (another method, a body, an expected 404) is a whole curl command.
    """
    base = base.rstrip("/")
    json = "curl -X POST -H 'Content-Type: application/json' -d"
    basket = (
        '{"items": [{"product_id": 1, "quantity": 2}, {"product_id": 9, "quantity": 1}], "coupon": "DISC10"}'
    )
    order = '{"buyer_id": "alice", "coupon": "DISC10"}'
    return [
        f"{base}/api/catalog/items?page=0&size=5",
        f"{base}/api/catalog/items/3",
        f"{base}/api/catalog/items/type/1",
        f"{base}/api/catalog/brands",
        f"curl -i {base}/api/catalog/items/999",
        f"{base}/api/discount/DISC10",
        f"{json} '{basket}' {base}/api/basket/alice",
        f"{base}/api/basket/alice",
        f"{base}/api/dashboard/alice",
        f"{json} '{order}' {base}/api/orders",
        f"{base}/api/orders?buyer_id=alice",
        f"curl -i {base}/api/orders/1",
        f"curl -i -X DELETE {base}/api/basket/alice",
    ]


def mobile_urls(base: str) -> list[str]:
    """What to try against the mobile gateway at ``base`` (``http://127.0.0.1:8081``): the same
    services, smaller answers (GETs that answer 2xx on a freshly started demo)."""
    base = base.rstrip("/")
    return [
        f"{base}/api/catalog/items?page=0&size=5",
        f"{base}/api/catalog/items/3",
        f"{base}/api/home/alice",
    ]


def live_url(base: str, buyer: str = "alice") -> str:
    """The live basket of ``buyer``: a WebSocket through the gateway at ``base`` (http or https),
    which sends the basket as JSON at once and each time it changes."""
    scheme, _, rest = base.rstrip("/").partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/api/basket/{buyer}/live"

"""What the docs say the gateway does, checked against the code that does it.

Each test reads a passage of README.md or docs/ (a worked example, an error message, a rule) and
runs the code the passage describes, so a doc that drifts from the code fails here. The
forward_auth ``Accept-Encoding`` claim needs an auth service and is checked in
tests/integration/test_forward_auth.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import orjson
import pytest
import yaml

from fastgw.config import parse_config
from fastgw.errors import ConfigError
from fastgw.http import limits
from fastgw.plugins.auth_jwt import JwtAuth
from fastgw.plugins.cache.key import KeySpec
from fastgw.plugins.ratelimit.admission import HeaderRenderer
from fastgw.plugins.ratelimit.algorithms import SlidingWindow, TokenBucket
from tests.support.exchange import FakeExchange, run_request
from tests.support.tokens import claims, jwks, public_pem, sign

ROOT = Path(__file__).resolve().parents[2]


def doc(name: str) -> str:
    """A doc's text with line breaks and indentation folded into single spaces."""
    return re.sub(r"\s+", " ", (ROOT / name).read_text())


def find(name: str, pattern: str) -> re.Match[str]:
    found = re.search(pattern, doc(name))
    assert found is not None, f"{name} no longer says {pattern!r}"
    return found


# -- caching -------------------------------------------------------------------------------------


def test_the_documented_purge_key_is_the_cache_key_of_its_request() -> None:
    # The key's host is the routed one: lower-case, without the port the client's Host carried.
    url, key = find(
        "docs/caching.md",
        r"a request for `(http://[^`]+)` is keyed `([^`]+)` on a route that keys the whole query",
    ).groups()
    parts = urlsplit(url)
    assert parts.port is not None, "the example should show that the port is not part of the key"
    request = SimpleNamespace(
        host=limits.check_host(parts.netloc.encode()),
        path=limits.normalize_path(parts.path.encode()),
        query=b"?" + parts.query.encode(),
    )
    assert KeySpec(None, ()).base_key(request, {}) == key.encode()


def test_coalescing_is_documented_per_process() -> None:
    # The coalescer's flights are futures of one event loop (plugins/cache/coalesce.py): a
    # shared Redis cache shares entries, not flights.
    for name in ("docs/caching.md", "README.md"):
        claim = find(name, r"[Cc]oalesces? concurrent misses[^.]*?\.|[Cc]oncurrent misses for one key[^.]*\.")
        assert "per process" in claim.group(0), claim.group(0)
    assert "Coalescing is per process, with Redis too" in doc("docs/caching.md")


# -- rate limit fields ---------------------------------------------------------------------------


def test_the_documented_ratelimit_examples_are_what_is_sent() -> None:
    limit, window = map(
        int, find("docs/policies.md", r"with `limit: (\d+)` and `window: (\d+)s`, `sliding_window`").groups()
    )
    policy = find("docs/policies.md", r'`RateLimit-Policy: "([\w-]+)";q=').group(1)
    renderer = HeaderRenderer(policy, limit, window, ("draft",))

    def told(remaining: int, reset: int) -> str:
        fields = dict(renderer.render(remaining, reset, []))
        return fields[b"RateLimit"].decode()

    nth, seconds_in, sliding_said = find(
        "docs/policies.md",
        r"`sliding_window` tells the (\d+)th request of a window, made (\d+) s into it with none in the "
        r"window before, `([^`]+)`",
    ).groups()
    sliding = SlidingWindow(limit, float(window))
    start = 1000.0 * window  # a window boundary
    for _ in range(int(nth) - 1):
        sliding.hit("client", start)
    now = start + int(seconds_in)
    remaining = sliding.hit("client", now)
    assert told(remaining, sliding.reset_seconds("client", now)) == sliding_said
    # t is the window's end, not when the quota is whole again: the next window still counts these.
    later = start + window + 1.0
    assert sliding.hit("client", later) < limit - 1

    burst, bucket_said = find(
        "docs/policies.md",
        r"`token_bucket` tells the (\d+)th of a burst that found the bucket full `([^`]+)`",
    ).groups()
    bucket = TokenBucket(limit, float(window))
    for _ in range(int(burst)):
        remaining = bucket.hit("client", start)
    assert told(remaining, bucket.reset_seconds("client", start)) == bucket_said


# -- jwt: tokens without kid ---------------------------------------------------------------------


def test_a_token_without_kid_is_tried_only_against_keys_without_one(tmp_path: Path) -> None:
    message = find("docs/policies.md", r"a token without `kid` against such a set gets 401 `([^`]+)`").group(
        1
    )
    unknown = find("docs/policies.md", r"one with an unknown `kid` gets `([^`]+)`").group(1)
    set_file = tmp_path / "jwks.json"
    set_file.write_text(orjson.dumps(jwks(("rsa", "r1"))).decode())
    with_kids = JwtAuth.compile({"key_file": str(set_file)}, "routes[0].plugins[0]")

    def error(gate: JwtAuth, token: str) -> str | None:
        response = run_request([gate], FakeExchange([("Authorization", f"Bearer {token}")]))
        return None if response is None else str(orjson.loads(response.body)["error"])

    # The set's only key signed it, but it has a kid and the token names none.
    assert error(with_kids, sign(claims(), "RS256")) == message
    assert error(with_kids, sign(claims(), "RS256", kid="r9")) == unknown
    assert error(with_kids, sign(claims(), "RS256", kid="r1")) is None
    # A key without a kid verifies tokens with or without one.
    without_kid = JwtAuth.compile({"public_key": public_pem("rsa")}, "routes[0].plugins[0]")
    assert error(without_kid, sign(claims(), "RS256")) is None
    assert error(without_kid, sign(claims(), "RS256", kid="anything")) is None


# -- aggregation: fields are top-level names -----------------------------------------------------


def test_aggregate_fields_are_top_level_names_and_target_takes_a_dotted_path() -> None:
    claim = find("docs/aggregation.md", r"`fields` \(an allow list of top-level names[^)]*\)").group(0)
    assert "not dotted paths" in claim

    def backend(**shaping: object) -> dict[str, object]:
        route = {
            "id": "agg",
            "path": "/a",
            "aggregate": {"backends": [{"upstream": "up", "path": "/x", **shaping}]},
        }
        return {
            "listeners": [{"bind": "127.0.0.1:0"}],
            "upstreams": {"up": {"targets": ["127.0.0.1:9"]}},
            "routes": [route],
        }

    parse_config(backend(target="data.items", fields=["id", "name"]), "gw.yaml")
    with pytest.raises(ConfigError, match=r"fields\[0\]: expected a JSON field name"):
        parse_config(backend(fields=["data.id"]), "gw.yaml")


# -- the demo in registry mode -------------------------------------------------------------------


def test_the_demo_registry_mode_section_shows_what_the_demo_runs() -> None:
    from fastgw.demo import CONFIG_PATH, instance_key, registry_document
    from fastgw.demo.registration import DEFAULT_LEASE_TTL

    text = (ROOT / "docs/discovery.md").read_text()
    section = text[text.index("## The demo in registry mode") :]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None, "docs/discovery.md no longer shows the demo's upstreams"
    shown = yaml.safe_load(block.group(1))
    endpoint = shown["registries"]["etcd"]["endpoints"][0]
    ran = registry_document(yaml.safe_load(Path(CONFIG_PATH).read_text()), endpoint)
    assert shown == {"registries": ran["registries"], "upstreams": ran["upstreams"]}
    key = find("docs/discovery.md", r"it puts the key `([^`]+)`").group(1)
    assert key.replace("<service>", "catalog").replace("<host>:<port>", "127.0.0.1:40123") == instance_key(
        "catalog", "127.0.0.1", 40123
    )
    lease = find("docs/discovery.md", r"under a lease of (\d+) seconds").group(1)
    assert int(lease) == DEFAULT_LEASE_TTL
    assert find("docs/discovery.md", r"\(`--lease-ttl SECONDS`, (\d+) by default\)").group(1) == lease

"""Every Ocelot configuration in tests/data/ocelot translates into a configuration fastgw accepts
(what ``fastgw check`` does: load and compile), and its report accounts for every key: each key of
a translated route that holds something (not null, empty, zero or false) has an entry under that
route, as does each key of GlobalConfiguration, and unknown keys are reported as ignored."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from fastgw.config import parse_config
from fastgw.importers.ocelot import Status, Translation, translate_files
from fastgw.importers.ocelot.reading import parse_jsonc, read_text_file
from fastgw.importers.ocelot.translate import expand
from fastgw.plan import compile_plan

DATA = Path(__file__).resolve().parents[1] / "data" / "ocelot"
SOURCES = [*sorted(DATA.glob("*.json")), DATA / "merged"]


def _lookup(obj: dict[str, Any], name: str) -> Any:
    return next((value for key, value in obj.items() if key.casefold() == name.casefold()), None)


def _holds_something(value: Any) -> bool:
    return value not in (None, "", 0, False, [], {})


@pytest.fixture(params=SOURCES, ids=[p.name for p in SOURCES])
def translation(request: pytest.FixtureRequest) -> Translation:
    return translate_files([str(request.param)])


def test_the_translation_passes_fastgw_check(translation: Translation) -> None:
    text = translation.checked_yaml()
    plan = compile_plan(parse_config(yaml.safe_load(text), "translated.yaml", env={}))
    assert plan.routes
    assert {route.id for route in plan.routes} == set(translation.origins)


def test_every_key_of_a_translated_route_is_reported(translation: Translation) -> None:
    reported = {(entry.file, entry.key_path) for entry in translation.report.entries}
    translated = set(translation.origins.values())
    missing = []
    for file in translation.report.files:
        document = parse_jsonc(read_text_file(file))
        assert isinstance(document, dict)
        for section in ("Routes", "ReRoutes", "Aggregates"):
            for index, route in enumerate(_lookup(document, section) or []):
                owner = f"{section}[{index}]"
                if f"{file}: {owner}" not in translated:
                    continue
                for key, value in route.items():
                    path = f"{owner}.{key}"
                    if _holds_something(value) and not any(
                        f == file and (p == path or p.startswith((path + ".", path + " ", path + "[")))
                        for f, p in reported
                    ):
                        missing.append(f"{file}: {path}")
        glob = _lookup(document, "GlobalConfiguration") or {}
        merged = len(translation.report.files) > 1
        if merged and Path(file).name.lower() != "ocelot.global.json":
            continue
        for key, value in glob.items():
            path = f"GlobalConfiguration.{key}"
            if _holds_something(value) and not any(
                f == file and (p == path or p.startswith(path + ".")) for f, p in reported
            ):
                missing.append(f"{file}: {path}")
    assert not missing, "keys the report does not mention:\n" + "\n".join(missing)


def test_unknown_keys_are_reported_as_ignored() -> None:
    translation = translate_files([str(DATA / "merged")])
    ignored = {
        (Path(e.file).name, e.key_path) for e in translation.report.entries if e.status is Status.IGNORED
    }
    assert ("ocelot.weather.json", "Routes[0].DefaultCity") in ignored
    assert ("ocelot.global.json", "GlobalConfiguration.Defaults") in ignored
    assert ("ocelot.posts.json", "GlobalConfiguration") in ignored  # only ocelot.global.json's counts


def test_a_folder_merges_its_ocelot_files_as_ocelot_does() -> None:
    folder = DATA / "merged"
    files = [Path(f).name for f in expand([str(folder)], "Development")]
    # ocelot.json is where Ocelot writes the merged result; the environment's file is skipped
    assert files == ["ocelot.docs.json", "ocelot.global.json", "ocelot.posts.json", "ocelot.weather.json"]
    production = [Path(f).name for f in expand([str(folder)], "Production")]
    assert "ocelot.Development.json" in production
    translation = translate_files([str(folder)])
    paths = [route["path"] for route in translation.document["routes"]]
    assert "/only-in-development" not in paths
    assert paths[:2] == ["/ocelot/docs/{*everything}", "/ocelot/docs"]  # file order, then route order
    assert translation.document["listeners"][0]["bind"] == "127.0.0.1:5556"  # ocelot.global.json's BaseUrl


def test_the_yaml_names_its_source_and_what_differs(translation: Translation) -> None:
    text = translation.yaml()
    head = text.split("\nlisteners:", 1)[0]
    assert head.startswith("# fastgw configuration translated from Ocelot's ")
    for entry in translation.report.entries:
        if entry.status is not Status.MAPPED:
            assert entry.detail[:40] in head.replace("\n# ", " ").replace("\n#", "")


def guide_example(tmp_path: Path, section: str, says: str) -> tuple[dict[str, Any], object]:
    """An example of docs/migrating-from-ocelot.md: (the translation of the first json block after
    ``section``, without the second forms of its routes; the yaml block after ``says``)."""
    guide = (Path(__file__).resolve().parents[2] / "docs" / "migrating-from-ocelot.md").read_text()
    text = guide.split(section, 1)[1]
    ocelot = re.search(r"```json\n(.*?)```", text, re.S)
    shown = re.search(says + r".*?```yaml\n(.*?)```", text, re.S)
    assert ocelot is not None and shown is not None
    source = tmp_path / "ocelot.json"
    source.write_text(ocelot[1])
    document = translate_files([str(source)]).document
    document["routes"] = [route for route in document["routes"] if not route["id"].endswith(".2")]
    return document, yaml.safe_load(shown[1])


def test_the_migration_guides_example_is_what_the_translation_makes(tmp_path: Path) -> None:
    """docs/migrating-from-ocelot.md shows an Ocelot file and its translation, with the JWT setting
    completed and the second form of the orders route left out, as its text says."""
    document, shown = guide_example(tmp_path, "## An example", "becomes this")
    for route in document["routes"]:
        for options in route.get("plugins", []):
            if options["name"] == "jwt":
                options["jwks_url"] = "https://login.example.com/.well-known/jwks.json"
    assert document == shown


def test_the_migration_guides_discovery_and_https_example_is_what_the_translation_makes(
    tmp_path: Path,
) -> None:
    """The guide's service discovery and HTTPS example, with the second forms of its routes left
    out, as its text says."""
    document, shown = guide_example(
        tmp_path, "## Service discovery and HTTPS upstreams", "translates to this"
    )
    assert document == shown

"""Reading Ocelot files as Ocelot reads them: JSON with comments, trailing commas and a byte order
mark; keys in any case; numbers and booleans as strings; nulls; files merged; precise errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastgw.errors import ConfigError
from fastgw.importers.ocelot import Status, translate_files
from fastgw.importers.ocelot.reading import OcelotObject, Registry, parse_jsonc
from fastgw.importers.ocelot.translate import is_ocelot_document
from tests.support.ocelot_files import entries, ocelot_route, translate


def test_comments_and_trailing_commas_are_read_as_asp_net_reads_them() -> None:
    text = """// a line comment
    {
      /* a block
         comment */ "a": "http://x/*not a comment*/", // after a value
      "b": [1, 2, /* inside */ 3,],
      "c": {"d": "//not either",},
    }"""
    assert parse_jsonc(text) == {"a": "http://x/*not a comment*/", "b": [1, 2, 3], "c": {"d": "//not either"}}


def test_an_error_names_the_line_and_column_of_the_file_itself() -> None:
    text = '{\n  /* two\n  lines */ "a": 1,\n  "b": oops\n}'
    with pytest.raises(ConfigError) as error:
        parse_jsonc(text)
    assert str(error.value).startswith("invalid JSON at line 4, column 8")


def test_an_unterminated_comment_is_an_error_where_it_starts() -> None:
    with pytest.raises(ConfigError, match=r"line 2, column 3: unterminated /\* comment"):
        parse_jsonc('{"a": 1,\n  /* never closed\n}')


def test_a_byte_order_mark_and_nulls_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "ocelot.json"
    text = '{"Routes": [{"UpstreamPathTemplate": "/a", "DownstreamPathTemplate": "/b", "Key": null,'
    text += ' "Priority": null, "DownstreamHostAndPorts": [{"Host": "localhost", "Port": 51001}]}]}'
    path.write_text(text, encoding="utf-8-sig")
    translation = translate_files([str(path)])
    assert [r["path"] for r in translation.document["routes"]] == ["/a"]


def test_keys_ignore_case_and_numbers_may_be_strings(tmp_path: Path) -> None:
    document = {
        "routes": [
            {
                "upstreampathtemplate": "/a/{id}",
                "DOWNSTREAMPATHTEMPLATE": "/b/{id}",
                "downstreamHostAndPorts": [{"host": "localhost", "PORT": "51001"}],
                "priority": "3",
                "routeIsCaseSensitive": "True",
            }
        ]
    }
    translation = translate(tmp_path, document)
    assert translation.document["routes"][0]["rewrite"] == "/b/{id}"
    assert translation.document["upstreams"]["localhost-51001"]["targets"] == ["localhost:51001"]
    assert entries(translation, Status.MAPPED, "routes[0].routeIsCaseSensitive")


def test_a_key_given_twice_in_two_cases_is_an_error_naming_it(tmp_path: Path) -> None:
    text = '{"Routes": [{"UpstreamPathTemplate": "/a", "upstreamPathTemplate": "/b"}]}'
    with pytest.raises(ConfigError) as error:
        translate(tmp_path, text)
    assert str(error.value) == (
        f"{tmp_path / 'ocelot.json'}: Routes[0].upstreamPathTemplate: duplicate key"
        " (keys ignore case: 'UpstreamPathTemplate' is the same)"
    )


def test_a_bad_value_is_an_error_naming_file_and_key_path(tmp_path: Path) -> None:
    route = ocelot_route(DownstreamHostAndPorts=[{"Host": "localhost", "Port": "eighty"}])
    with pytest.raises(ConfigError) as error:
        translate(tmp_path, {"Routes": [route]})
    where = f"{tmp_path / 'ocelot.json'}: Routes[0].DownstreamHostAndPorts[0].Port"
    assert str(error.value) == f"{where}: expected an integer, found 'eighty'"


def test_a_route_without_a_template_is_an_error(tmp_path: Path) -> None:
    route = ocelot_route()
    del route["UpstreamPathTemplate"]
    with pytest.raises(ConfigError, match=r"Routes\[0\]\.UpstreamPathTemplate: expected a path template"):
        translate(tmp_path, {"Routes": [route]})


def test_invalid_json_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        translate(tmp_path, '{"Routes": [}')
    assert str(error.value).startswith(f"{tmp_path / 'ocelot.json'}: invalid JSON at line 1, column 13")


def test_an_ocelot_document_is_told_from_a_fastgw_one() -> None:
    assert is_ocelot_document(parse_jsonc('// comment\n{"Routes": [],}'))
    assert is_ocelot_document(parse_jsonc('{"reRoutes": []}'))
    assert not is_ocelot_document(parse_jsonc('{"listeners": [], "routes": [], "upstreams": {}}'))
    assert not is_ocelot_document(parse_jsonc('{"GlobalConfiguration": {}}'))
    assert not is_ocelot_document(parse_jsonc("[1, 2]"))


def test_accessors_read_leniently_and_remember_what_they_read() -> None:
    registry = Registry()
    obj = OcelotObject({"A": "7", "b": "TRUE", "c": "Get", "d": None, "e": 2.0}, "f.json", "X", registry)
    assert (obj.integer("a"), obj.flag("B"), obj.strings("C"), obj.text("D"), obj.integer("E")) == (
        7, True, ["Get"], None, 2
    )  # fmt: skip
    assert obj.unread() == []
    assert OcelotObject({"Unused": 1}, "f.json", "Y", registry).unread() == ["Unused"]
    with pytest.raises(ConfigError, match=r"X\.A: expected true or false, found '7'"):
        obj.flag("A")


def test_merged_files_take_global_configuration_from_ocelot_global_json_only(tmp_path: Path) -> None:
    translate(
        tmp_path,
        {"Routes": [ocelot_route("/a")], "GlobalConfiguration": {"BaseUrl": "http://x:1"}},
        "ocelot.a.json",
    )
    translate(tmp_path, {"GlobalConfiguration": {"BaseUrl": "http://localhost:7000"}}, "ocelot.global.json")
    translate(tmp_path, {"Routes": [ocelot_route("/b")]}, "ocelot.b.json")
    translation = translate_files([str(tmp_path)])
    assert [r["path"] for r in translation.document["routes"]] == ["/a", "/b"]
    assert translation.document["listeners"][0]["bind"] == "127.0.0.1:7000"
    ignored = entries(translation, Status.IGNORED, "GlobalConfiguration")
    assert [Path(e.file).name for e in ignored] == ["ocelot.a.json"]


def test_a_folder_without_ocelot_files_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no ocelot\.\*\.json file in this folder"):
        translate_files([str(tmp_path)])

"""Command line: ``fastgw run | check | routes | config push | import | demo | hash-key |
hash-password``. Parsing and printing only."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fastgw import __version__
from fastgw.errors import ClientFault, ConfigError

if TYPE_CHECKING:
    from fastgw.config.schema import ListenerConfig, UpstreamConfig

DEFAULT_CONFIG = "fastgw.yaml"  # in the current directory, when -c is not given
_CONFIG_HELP = f"YAML or JSON config file (default: ./{DEFAULT_CONFIG})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastgw", description="A high-throughput API gateway.")
    parser.add_argument("--version", action="version", version=f"fastgw {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the gateway")
    run.add_argument("-c", "--config", help=_CONFIG_HELP)
    run.add_argument("-w", "--workers", type=int, default=1, help="worker processes (SO_REUSEPORT)")
    run.add_argument("--watch", action="store_true", help="reload when the config file changes")
    run.add_argument(
        "--etcd", action="append", metavar="URL",
        help="read the config from etcd (repeatable: endpoints of one cluster) instead of a file;"
        " reload on each change of --key",
    )  # fmt: skip
    run.add_argument("--key", help="the etcd key holding the config (with --etcd)")

    check = sub.add_parser("check", help="validate a config and print a summary")
    check.add_argument("-c", "--config", help=_CONFIG_HELP)

    routes = sub.add_parser("routes", help="print the route table, or explain one request")
    routes.add_argument("-c", "--config", help=_CONFIG_HELP)
    routes.add_argument("--match", metavar='"METHOD URL"', help='e.g. "GET http://api.example.com/items/7"')
    routes.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar='"NAME: VALUE"',
        help="a request header for --match, as curl takes it (repeatable; Host stands for the URL's host)",
    )

    config = sub.add_parser("config", help="the configuration a fleet of gateways shares in etcd")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    push = config_commands.add_parser("push", help="validate a config file, then write it to an etcd key")
    push.add_argument("-c", "--config", required=True, help="the YAML or JSON file to push")
    push.add_argument(
        "--etcd", action="append", required=True, metavar="URL", help="an etcd endpoint (repeatable)"
    )
    push.add_argument("--key", required=True, help="the etcd key the gateways watch")

    imports = sub.add_parser("import", help="translate another gateway's configuration into fastgw's")
    sources = imports.add_subparsers(dest="source", required=True)
    ocelot = sources.add_parser(
        "ocelot", help="Ocelot's ocelot.json; several files (or a folder of ocelot.*.json) merge as in Ocelot"
    )
    ocelot.add_argument(
        "files", nargs="+", metavar="FILE", help="ocelot.json, ocelot.*.json files or a folder"
    )
    ocelot.add_argument("-o", "--output", help="write the fastgw YAML here (default: standard output)")
    ocelot.add_argument("--bind", help="the listener's address (default: from BaseUrl, else 127.0.0.1:5000)")
    ocelot.add_argument(
        "--environment",
        default="Development",
        help="a folder's ocelot.ENVIRONMENT.json is skipped (as Ocelot does)",
    )

    demo = sub.add_parser("demo", help="run the gateway in front of the bundled e-commerce demo")
    demo.add_argument("--bind", default=None, help="gateway address (default 127.0.0.1:8080)")
    demo.add_argument("--tls-bind", default=None, help="its HTTPS address (default 127.0.0.1:8443)")
    demo.add_argument(
        "--mobile-bind", default=None, help="the mobile gateway's address (default 127.0.0.1:8081)"
    )
    demo.add_argument("--smoke", action="store_true", help="call every demo URL once and exit")
    demo.add_argument(
        "--registry", metavar="URL", default=None,
        help="an etcd (http://127.0.0.1:2379): the services register there, the gateway finds them there",
    )  # fmt: skip

    hash_key = sub.add_parser("hash-key", help="print the digest an api_key plugin's config holds for a key")
    hash_key.add_argument("--generate", action="store_true", help="make a new random key and print it too")
    hash_password = sub.add_parser("hash-password", help="print the hash a basic_auth user's config holds")
    hash_password.add_argument("--pbkdf2", action="store_true", help="PBKDF2-SHA256 instead of scrypt")

    arguments = sys.argv[1:] if argv is None else list(argv)
    misplaced = _command_option_first(parser, sub, arguments)
    if misplaced is not None:
        parser.error(misplaced)
    args = parser.parse_args(arguments)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s fastgw %(levelname)s %(message)s"
    )
    if args.command == "run" and (args.etcd is None) != (args.key is None):
        parser.error("--etcd and --key go together: the etcd endpoint and the key holding the config")
    if args.command == "run" and args.etcd is not None and (args.config is not None or args.watch):
        parser.error("--etcd reads the config from etcd (and follows it): no -c or --watch with it")
    if args.command == "demo" and args.registry is not None:
        from fastgw.config.discovery import read_http_url

        try:
            args.registry = read_http_url(args.registry, "--registry")
        except ConfigError as exc:
            parser.error(str(exc))
    from_etcd = args.command == "run" and args.etcd is not None
    if args.command in ("run", "check", "routes") and args.config is None and not from_etcd:
        if not os.path.exists(DEFAULT_CONFIG):
            print(
                f"fastgw: no configuration: ./{DEFAULT_CONFIG} does not exist; name the file with -c, "
                f"e.g. fastgw {args.command} -c gateway.yaml",
                file=sys.stderr,
            )
            return 2
        args.config = DEFAULT_CONFIG
    try:
        if args.command == "run" and from_etcd:
            return _run_from_etcd(args.etcd, args.key, args.workers)
        if args.command == "run":
            return _run(args.config, args.workers, args.watch)
        if args.command == "config":
            return _push(args.config, args.etcd, args.key)
        if args.command == "check":
            return _check(args.config)
        if args.command == "routes":
            return _routes(args.config, args.match, args.header)
        if args.command == "import":
            return _import_ocelot(args.files, args.output, args.bind, args.environment)
        if args.command == "hash-key":
            return _hash_key(args.generate)
        if args.command == "hash-password":
            return _hash_password(args.pbkdf2)
        from fastgw.demo.runner import run_demo

        return run_demo(args.bind, args.smoke, args.tls_bind, args.mobile_bind, args.registry)
    except ConfigError as exc:
        print(f"fastgw: invalid configuration: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _command_option_first(
    parser: argparse.ArgumentParser,
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    arguments: list[str],
) -> str | None:
    """The usage error for a command's option given before any command (``fastgw --workers 8``,
    which argparse would report as "invalid choice: '8'"), suggesting the command; else None."""
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        if not argument.startswith("-"):
            return None  # the command comes first: argparse takes it from here
        option = argument.split("=", 1)[0]
        own = parser._option_string_actions.get(option)
        if own is not None:
            index += 2 if own.nargs != 0 and "=" not in argument else 1  # --log-level VALUE
            continue
        owners = [name for name, command in sub.choices.items() if option in command._option_string_actions]
        if owners:
            suggestion = shlex.join(["fastgw", owners[0], *arguments[index:]])
            commands = "|".join(owners)
            return f"{option} is an option of 'fastgw {commands}', not of fastgw itself: try {suggestion}"
        return None
    return None


def _load(path: str):  # type: ignore[no-untyped-def]
    from fastgw.config import load_config
    from fastgw.plan import compile_plan

    config = load_config(path)
    return config, compile_plan(config)


def _run(path: str, workers: int, watch: bool = False) -> int:
    from fastgw.reload import FileReloader

    return _serve(FileReloader(path), workers, watch)


def _etcd_registry(endpoints: list[str]):  # type: ignore[no-untyped-def]
    """Connection settings from the command line and etcdctl's own environment variables:
    ETCDCTL_USER (``name:password``, or the name with ETCDCTL_PASSWORD), ETCDCTL_CACERT,
    ETCDCTL_CERT, ETCDCTL_KEY; so one environment serves etcdctl and fastgw alike."""
    from fastgw.config.discovery import read_http_url
    from fastgw.config.schema import EtcdRegistry, TlsFiles

    urls = tuple(read_http_url(url, "--etcd") for url in endpoints)
    user = os.environ.get("ETCDCTL_USER") or None
    password = os.environ.get("ETCDCTL_PASSWORD") or None
    if user is not None and password is None and ":" in user:
        user, password = user.split(":", 1)
    ca, cert, key = (os.environ.get(f"ETCDCTL_{name}") or None for name in ("CACERT", "CERT", "KEY"))
    tls = TlsFiles(ca, cert, key) if ca or cert else None
    return EtcdRegistry(endpoints=urls, username=user, password=password, tls=tls)


def _run_from_etcd(endpoints: list[str], key: str, workers: int) -> int:
    from fastgw.reload import EtcdReloader

    return _serve(EtcdReloader(_etcd_registry(endpoints), key), workers, watch=True)


def _serve(reloader, workers: int, watch: bool) -> int:  # type: ignore[no-untyped-def]
    from fastgw.server.workers import run_workers, serve

    if workers < 1:
        print("fastgw: --workers must be at least 1", file=sys.stderr)
        return 2
    plan = reloader.first()
    if workers == 1:
        return serve(plan, reloader, watch=watch)
    if any(lp.port == 0 for lp in plan.listeners.values()):
        print("fastgw: --workers > 1 needs fixed listener ports (port 0 found)", file=sys.stderr)
        return 2
    return run_workers(plan, reloader, workers, watch)


def _push(path: str, endpoints: list[str], key: str) -> int:
    """Validate ``path`` exactly as the gateways will read it (its text, parsed and compiled),
    then write that text to ``key``; an invalid file is never written."""
    import asyncio

    from fastgw.config import load_text
    from fastgw.control_http import close_control_session
    from fastgw.etcd import EtcdClient, EtcdError
    from fastgw.plan import compile_plan

    try:
        with open(path, encoding="utf-8-sig") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(
            "", f"cannot read the file: {getattr(error, 'strerror', None) or error}", path
        ) from None
    plan = compile_plan(load_text(text, path))
    client = EtcdClient(_etcd_registry(endpoints))

    async def write() -> int:
        try:
            return await client.put(key.encode(), text.encode())
        finally:
            await close_control_session()

    try:
        revision = asyncio.run(write())
    except EtcdError as error:
        print(f"fastgw: {path} is valid, but writing it to etcd failed: {error}", file=sys.stderr)
        return 1
    print(f"{path}: OK ({len(plan.routes)} routes); pushed to etcd key {key} at revision {revision}")
    return 0


def _check(path: str) -> int:
    config, plan = _load(path)
    print(f"{path}: OK")
    print(f"  listeners: {', '.join(_describe_listener(lc) for lc in config.listeners)}")
    print(f"  upstreams: {', '.join(_describe_upstream(n, u) for n, u in config.upstreams.items())}")
    print(f"  routes:    {len(plan.routes)}")
    return 0


def _describe_listener(lc: ListenerConfig) -> str:
    authority = f"[{lc.host}]:{lc.port}" if ":" in lc.host else f"{lc.host}:{lc.port}"
    if lc.tls is None:
        return f"{lc.name} (http://{authority})"
    certificates = len(lc.tls.certificates)
    extra = f", {certificates} certificates" if certificates > 1 else ""
    if lc.tls.client_certificates is not None:
        extra += f", client certificates {lc.tls.client_certificates.mode}"
    return f"{lc.name} (https://{authority}{extra})"


def _describe_upstream(name: str, upstream: UpstreamConfig) -> str:
    tls = upstream.tls
    kind = "" if tls is None else ", https, NOT VERIFIED" if tls.insecure_skip_verify else ", https"
    found = f" + {upstream.discovery.describe()}" if upstream.discovery else ""
    return f"{name} ({len(upstream.targets)} targets{found}{kind})"


def _routes(path: str, match: str | None, header_lines: list[str]) -> int:
    from fastgw.explain import explain_match, parse_header, resolve_discovered

    if header_lines and match is None:
        print("fastgw: -H/--header describes the request of --match; give --match too", file=sys.stderr)
        return 2
    try:
        headers = [parse_header(line) for line in header_lines]
    except ValueError as exc:
        print(f"fastgw: -H: {exc}", file=sys.stderr)
        return 2
    config, plan = _load(path)
    if match is None:
        rows = [("ID", "LISTENERS", "METHODS", "HOSTS", "PATH", "UPSTREAM", "REWRITE", "PRIO")]
        for r in config.routes:
            rows.append(
                (
                    r.id,
                    ",".join(r.listeners) or "*",
                    ",".join(r.methods) if r.methods else "*",
                    ",".join(r.hosts) or "*",
                    r.path,
                    r.upstream or "aggregate",
                    r.rewrite or (f"strip {r.strip_prefix}" if r.strip_prefix else "-"),
                    str(r.priority),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        return 0
    try:
        lines, found = explain_match(plan, match, headers, resolve_discovered(plan))
    except (ValueError, ClientFault) as exc:
        print(f"fastgw: cannot explain {match!r}: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0 if found else 1


def _import_ocelot(files: list[str], output: str | None, bind: str | None, environment: str) -> int:
    """The YAML to ``output`` (or standard output) and the report to the other stream."""
    from fastgw.importers.ocelot import translate_files

    translation = translate_files(files, environment=environment, bind=bind)
    print(translation.report.render(), file=sys.stdout if output else sys.stderr, end="")
    text = translation.checked_yaml()
    if output is None:
        sys.stdout.write(text)
        return 0
    try:
        with open(output, "w", encoding="utf-8") as file:
            file.write(text)
    except OSError as error:
        print(f"fastgw: cannot write {output}: {error.strerror or error}", file=sys.stderr)
        return 2
    print(f"\nwrote {output}")
    return 0


def _read_secret(prompt: str, confirm: bool) -> str | None:
    """From the terminal without echo (asked twice), or the first line of standard input."""
    if sys.stdin.isatty():
        import getpass

        secret = getpass.getpass(f"{prompt}: ")
        if confirm and getpass.getpass(f"{prompt} again: ") != secret:
            print("fastgw: the two entries differ", file=sys.stderr)
            return None
    else:
        secret = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not secret:
        print(f"fastgw: empty {prompt.lower()}", file=sys.stderr)
        return None
    return secret


def _hash_key(generate: bool) -> int:
    from fastgw.plugins.auth_key import generate_key, hash_key

    if generate:
        new_key = generate_key()
        print(f"key:    {new_key}")
        print(f"digest: {hash_key(new_key)}")
        return 0
    key = _read_secret("API key", confirm=False)
    if key is None:
        return 2
    print(hash_key(key))
    return 0


def _hash_password(pbkdf2: bool) -> int:
    from fastgw.plugins.auth_basic import hash_password

    password = _read_secret("Password", confirm=True)
    if password is None:
        return 2
    print(hash_password(password, scheme="pbkdf2-sha256" if pbkdf2 else "scrypt"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``fastroute serve | check | init | tui | watch | keys | usage | reload``."""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from fastroute import __version__
from fastroute.errors import ConfigError


#: the config ``serve`` and ``check`` use when none is named and this file is in the current directory
LOCAL_CONFIG = "fastroute.toml"
FOUND_HERE = " (found in the current directory)"


def _load_raw(path: str | None) -> tuple[dict[str, Any], str, list[str]]:
    """(raw config, source name, lines about what was found) for a path, else ``./fastroute.toml``
    when there is one, else the embedded default."""
    from fastroute.config import read_toml

    if path is None and Path(LOCAL_CONFIG).is_file():
        path = f"./{LOCAL_CONFIG}"
    if path is None:
        from fastroute.defaults import embedded_config, probe_ollama

        raw, found = embedded_config(os.environ, probe_ollama())
        return raw, "<embedded default>", found
    return read_toml(path), path, []


def _named(source: str, path: str | None) -> str:
    """The config's name for a banner: says so when it was found rather than named."""
    return source + (FOUND_HERE if path is None and source == f"./{LOCAL_CONFIG}" else "")


def _prepare(raw: dict[str, Any], source: str) -> Any:
    """Validate everything a worker will build, so a bad config fails here, once (a reload does the same)."""
    from fastroute.server.reload import prepare

    p = prepare(raw, source)
    return p.config, p.usable, p.warnings, p.router


def _print_table(usable: Any, router: Any, out: Any) -> None:
    print("providers:", file=out)
    for p in usable.providers:
        key = f"key ${p.api_key_env}" + ("" if os.environ.get(p.api_key_env) else " (unset)") if p.api_key_env else "no key"
        where = p.base_url or "built in"
        print(f"  {p.name:<12} {p.format:<8} {where:<40} {key}", file=out)
    print("routing (first match wins):", file=out)
    for line in router.describe() or ["(no rules: every request gets 400)"]:
        print(f"  {line}", file=out)


def _print_bases(s: Any, out: Any) -> None:
    """The base URL each client family takes, the dashboard's, and what the console will show."""
    from fastroute.server import base_urls

    at = base_urls.origin(s.host, s.port)
    print("\nbase URLs for clients:", file=out)
    rows = [(label, url, f"clients add {adds}") for label, url, adds in base_urls.banner(at)]
    if s.dashboard:
        rows.append(("dashboard", f"{at}/dashboard", "in a browser"))
    for label, url, note in rows:
        print(f"  {label:<26} {url:<32} {note}", file=out)
    if base_urls.listens_everywhere(s.host):
        print(f"  (listening on every address of this machine: from elsewhere, use its address for {at})",
              file=out)
    shown = "every request" if s.access_log else "every failed request (every request: --access-log)"
    print(f"a line here for {shown}.  Ctrl-C stops.", file=out, flush=True)


def cmd_check(args: argparse.Namespace) -> int:
    from fastroute.config import require_env

    raw, source, found = _load_raw(args.config)
    config, usable, warnings, router = _prepare(raw, source)
    try:
        require_env(config)  # a variable set only where it is served: say so, it is not a config error
    except ConfigError as exc:
        warnings = [*warnings, f"{exc.path}: {exc.problem} (serve would refuse to start here)"]
    print(f"config: {_named(source, args.config)}")
    for line in found:
        print(f"  {line}")
    for w in warnings:
        print(f"warning: {w}")
    print(f"{source}: ok")
    _print_table(usable, router, sys.stdout)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from fastroute import _speedups
    from fastroute.config import require_env
    from fastroute.server.runner import loop_name, serve

    path = args.config_flag or args.config
    from fastroute.server.reload import EMBEDDED, with_overrides

    raw, source, found = _load_raw(path)
    overrides = {key: value for key, value in (("host", args.host), ("port", args.port), ("workers", args.workers),
                                               ("access_log", args.access_log or None)) if value is not None}
    raw = with_overrides(raw, overrides)
    config, usable, warnings, router = _prepare(raw, source)
    require_env(config)  # here, once, rather than in every worker
    s = config.server
    print(f"fastroute {__version__} on {loop_name()}, speedups: {_speedups.implementation()}, "
          f"upstream client: {s.upstream_client}, workers: {s.workers}")
    print(f"config: {_named(source, path)}")
    print(_state_line(config))
    if config.events.redis_url:
        from fastroute.recording.redis_relay import where

        print(f"events: shared with other instances through {where(config.events.redis_url)}, "
              f"channel {config.events.channel!r}")
    for line in found:
        print(f"  {line}")
    for w in warnings:
        print(f"warning: {w}")
    _print_table(usable, router, sys.stdout)
    _print_bases(s, sys.stdout)
    serve(raw, source, s.host, s.port, s.workers, s.shutdown_grace_s,
          path=None if source == EMBEDDED else os.path.abspath(source), overrides=overrides)
    return 0


def _state_line(config: Any) -> str:
    """Where the Responses state lives, for how long, and how to turn it off."""
    r = config.responses
    if not r.store:
        return "state: Responses are not kept ([responses] store = false)"
    from fastroute.storage import open_store

    days = r.ttl_s / 86400
    span = f"{days:g} days" if days >= 1 else f"{r.ttl_s:g} s"
    line = (f"state: Responses kept for {span} in {config.storage.kind} {open_store(config.storage).where} "
            "(previous_response_id, item_reference; off: [responses] store = false)")
    if config.storage.kind == "memory" and config.server.workers > 1:
        line += ("\nwarning: [storage] kind = \"memory\" is each worker's own: with "
                 f"{config.server.workers} workers a follow-up request may not find what another kept")
    return line


def cmd_init(args: argparse.Namespace) -> int:
    target = Path(args.path)
    if target.exists() and not args.force:
        print(f"{target} exists; use --force to overwrite", file=sys.stderr)
        return 1
    target.write_text(resources.files("fastroute").joinpath("example.toml").read_text(encoding="utf-8"),
                      encoding="utf-8")
    print(f"wrote {target}; check it with: fastroute check {target}")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from fastroute.tui.watch import run

    return run(args.url, args.json, args.api_key or os.environ.get("FASTROUTE_API_KEY"), args.count)


def cmd_tui(args: argparse.Namespace) -> int:
    from fastroute.tui.app import run

    return run(args.url, args.api_key or os.environ.get("FASTROUTE_API_KEY"))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastroute", description="A fast, local-first LLM router.")
    p.add_argument("--version", action="version", version=f"fastroute {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the router (no config: ./fastroute.toml, else an embedded default)")
    s.add_argument("config", nargs="?", help="TOML config file (none: ./fastroute.toml if there is one)")
    s.add_argument("--config", dest="config_flag", metavar="CONFIG", help="TOML config file (same as the argument)")
    s.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port to listen on (default 8090)")
    s.add_argument("--workers", type=int, help="worker processes (default 1)")
    s.add_argument("--access-log", action="store_true",
                   help="print a line per request (failed requests are printed anyway)")
    s.set_defaults(func=cmd_serve)

    c = sub.add_parser("check", help="validate a config and print the providers and routing table")
    c.add_argument("config", nargs="?", help="TOML config file (none: ./fastroute.toml, else the embedded default)")
    c.set_defaults(func=cmd_check)

    i = sub.add_parser("init", help="write a commented example config")
    i.add_argument("path", nargs="?", default="fastroute.toml")
    i.add_argument("--force", action="store_true", help="overwrite an existing file")
    i.set_defaults(func=cmd_init)

    w = sub.add_parser("watch", help="print one line per event of a running fastroute")
    w.add_argument("url", nargs="?", default="http://127.0.0.1:8090")
    w.add_argument("--json", action="store_true", help="the raw events, one JSON object a line")
    w.add_argument("--api-key", help="the server's key, if it needs one (or $FASTROUTE_API_KEY)")
    w.add_argument("--count", type=int, help=argparse.SUPPRESS)
    w.set_defaults(func=cmd_watch)

    t = sub.add_parser("tui", help="the terminal monitor: live feed, stats and a chat")
    t.add_argument("url", nargs="?", default="http://127.0.0.1:8090")
    t.add_argument("--api-key", help="the server's key, if it needs one (or $FASTROUTE_API_KEY)")
    t.set_defaults(func=cmd_tui)

    from fastroute.admin_cli import add_parsers

    add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command in ("keys", "usage", "reload"):
            from fastroute.admin_cli import run

            return run(args)
        return args.func(args)
    except ConfigError as exc:
        print(f"fastroute: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

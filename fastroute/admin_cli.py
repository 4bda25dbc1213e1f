"""``fastroute keys create|list|update|revoke``, ``fastroute usage`` and ``fastroute reload``: a
running server's admin API from the command line.

The server is ``--url`` (else ``$FASTROUTE_URL``, else ``http://127.0.0.1:8090``); the admin
token comes from the environment, ``$FASTROUTE_ADMIN_TOKEN`` (or the variable ``--token-env``
names), never from the command line, where ``ps`` and shell histories would show it.  A created
(or rotated) key's secret is printed once, on its own line.  Exit status: 0 done, 1 the server
refused or could not be reached (its message printed), 2 a usage error here.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8090"
TOKEN_ENV = "FASTROUTE_ADMIN_TOKEN"
#: ``--since 24h``: how far back, in a unit
RELATIVE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class Failed(Exception):
    """What the command prints before it exits with ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def add_parsers(sub: Any) -> None:
    """The ``keys`` and ``usage`` commands, on ``fastroute``'s subparsers."""
    k = sub.add_parser("keys", help="create, list, change and revoke client keys on a running server (admin API)")
    ks = k.add_subparsers(dest="keys_command", required=True)
    create = ks.add_parser("create", help="a new key; its secret is printed once")
    create.add_argument("name")
    _limits_args(create)
    create.set_defaults(func=cmd_keys_create)
    listing = ks.add_parser("list", help="every key (never a secret)")
    listing.add_argument("--json", action="store_true", help="the API's answer as it came")
    listing.set_defaults(func=cmd_keys_list)
    update = ks.add_parser("update", help="change a key's models, limits, budget or metadata")
    update.add_argument("name")
    _limits_args(update)
    update.add_argument("--no-rate-limit", action="store_true", help="remove its rate limits")
    update.add_argument("--no-budget", action="store_true", help="remove its budget")
    update.add_argument("--rotate", action="store_true", help="a new secret (printed once); the old one stops working")
    update.set_defaults(func=cmd_keys_update)
    revoke = ks.add_parser("revoke", help="delete a key: it stops working at once")
    revoke.add_argument("name")
    revoke.set_defaults(func=cmd_keys_revoke)
    for p in (create, listing, update, revoke):
        _server_args(p)

    u = sub.add_parser("usage", help="requests, tokens and cost from a running server's audit log (admin API)")
    u.add_argument("--key", help="only this key's requests")
    u.add_argument("--since", help="from: ms since the epoch, an ISO 8601 time, or a span back (30m, 24h, 7d)")
    u.add_argument("--until", help="to (not included): the same forms")
    u.add_argument("--by", default="key", choices=("key", "model", "day", "session"), help="sum by (default: key)")
    u.add_argument("--json", action="store_true", help="the API's answer as it came")
    _server_args(u)
    u.set_defaults(func=cmd_usage)

    r = sub.add_parser("reload", help="make a running server read its config file again (admin API); "
                                      "a file with a mistake changes nothing")
    r.add_argument("--json", action="store_true", help="the API's answer as it came")
    _server_args(r)
    r.set_defaults(func=cmd_reload)


def _server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=None, help=f"the server (default: $FASTROUTE_URL, else {DEFAULT_URL})")
    p.add_argument("--token-env", default=TOKEN_ENV, metavar="VAR",
                   help=f"the variable holding the admin token (default: {TOKEN_ENV})")


def _limits_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", metavar="GLOB", help='the models it may use (default for a new key: "*")')
    p.add_argument("--rpm", type=int, metavar="N", help="requests per minute")
    p.add_argument("--tpm", type=int, metavar="N", help="tokens per minute")
    p.add_argument("--budget", type=float, metavar="USD", help="dollars per period")
    p.add_argument("--period", choices=("day", "week", "month", "total"), help="the budget's period (default: month)")
    p.add_argument("--metadata", nargs="+", metavar="KEY=VALUE", help="what records of it carry")


# ── the commands ────────────────────────────────────────────────────────────

def cmd_keys_create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name, **_changes(args, {})}
    key = _call(args, "POST", "/v1/admin/keys", body)
    print(f"created key {key['name']!r}: {describe(key)}")
    _secret(key)
    return 0


def _print_json(answer: Any) -> int:
    """``--json``: the API's answer as it came, indented."""
    import orjson

    sys.stdout.write(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    answer = _call(args, "GET", "/v1/admin/keys")
    if args.json:
        return _print_json(answer)
    keys = answer["data"]
    if not keys:
        print("no keys: anyone may call this server")
        return 0
    rows = [(k["name"], k["source"], " ".join(k["models"]), _rate(k["rate_limit"]), _budget(k["budget"]))
            for k in keys]
    _table(("NAME", "SOURCE", "MODELS", "RATE LIMIT", "BUDGET"), rows)
    return 0


def cmd_keys_update(args: argparse.Namespace) -> int:
    current = _call(args, "GET", f"/v1/admin/keys/{_segment(args.name)}")
    body = _changes(args, current)
    if args.no_rate_limit:
        body["rate_limit"] = None
    if args.no_budget:
        body["budget"] = None
    if args.rotate:
        body["rotate"] = True
    if not body:
        raise Failed("nothing to change: give --models, --rpm, --tpm, --budget, --period, --metadata, "
                     "--no-rate-limit, --no-budget or --rotate", 2)
    key = _call(args, "PATCH", f"/v1/admin/keys/{_segment(args.name)}", body)
    print(f"updated key {key['name']!r}: {describe(key)}")
    _secret(key)
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    _call(args, "DELETE", f"/v1/admin/keys/{_segment(args.name)}")
    print(f"revoked key {args.name!r}: it no longer works")
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    params = {"group_by": args.by}
    if args.key:
        params["key"] = args.key
    for name in ("since", "until"):
        value = getattr(args, name)
        if value:
            params[name] = str(when(value))
    answer = _call(args, "GET", "/v1/admin/usage", params=params)
    if args.json:
        return _print_json(answer)
    rows = [(row[args.by] if row[args.by] is not None else "—", str(row["requests"]), str(row["prompt_tokens"]),
             str(row["completion_tokens"]), str(row["cached_tokens"]), f"{row['cost_micros'] / 1e6:.6f}")
            for row in answer["data"]]
    if not rows:
        print("no requests in that range")
        return 0
    total = [sum(int(r[i]) for r in rows) for i in range(1, 5)]
    rows.append(("total", *map(str, total), f"{sum(row['cost_micros'] for row in answer['data']) / 1e6:.6f}"))
    _table((args.by.upper(), "REQUESTS", "PROMPT", "COMPLETION", "CACHED", "COST USD"), rows)
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    answer = _call(args, "POST", "/v1/admin/reload")
    if args.json:
        return _print_json(answer)
    workers = answer["workers"]
    print(f"reloaded: generation {answer['generation']}, {answer['providers']} provider(s), {answer['rules']} "
          f"routing rule(s); {workers['serving']} of {workers['of']} worker(s) serving it")
    for warning in answer["warnings"]:
        print(f"warning: {warning}")
    if answer["restart_needed"]:
        print("kept until a restart: " + ", ".join(answer["restart_needed"]))
    if workers["serving"] < workers["of"]:
        print("not every worker serves it yet: the server's log says why", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except Failed as exc:
        print(f"fastroute: {exc}", file=sys.stderr)
        return exc.code


# ── helpers ────────────────────────────────────────────────────────────────

def when(value: str, now: float | None = None) -> int:
    """``--since``/``--until`` as ms since the epoch: ms already, a span back (``24h``), or ISO 8601 (UTC unless it says)."""
    if value.isdigit():
        return int(value)
    span = RELATIVE.fullmatch(value)
    if span:
        now = time.time() if now is None else now
        return int((now - float(span.group(1)) * UNIT_S[span.group(2)]) * 1000)
    from datetime import UTC, datetime

    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Failed(f"{value!r} is not a time: ms since the epoch, an ISO 8601 time, or a span like 30m, 24h, 7d",
                     2) from None
    return int((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp() * 1000)


def _changes(args: argparse.Namespace, current: dict[str, Any]) -> dict[str, Any]:
    """The body's fields for the options given, merged with the key's ``current`` limits."""
    body: dict[str, Any] = {}
    if args.models:
        body["models"] = args.models
    if args.rpm is not None or args.tpm is not None:
        rate = {k: v for k, v in (current.get("rate_limit") or {}).items() if v is not None}
        if args.rpm is not None:
            rate["requests_per_minute"] = args.rpm
        if args.tpm is not None:
            rate["tokens_per_minute"] = args.tpm
        body["rate_limit"] = rate
    if args.budget is not None or args.period is not None:
        budget = dict(current.get("budget") or {})
        if args.budget is not None:
            budget["usd"] = args.budget
        if args.period is not None:
            budget["period"] = args.period
        if "usd" not in budget:
            raise Failed("--period needs a budget: give --budget USD too", 2)
        body["budget"] = budget
    if args.metadata:
        meta = dict(current.get("metadata") or {})
        for pair in args.metadata:
            name, eq, value = pair.partition("=")
            if not eq or not name:
                raise Failed(f"--metadata takes KEY=VALUE, got {pair!r}", 2)
            meta[name] = value
        body["metadata"] = meta
    return body


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None,
          params: dict[str, str] | None = None) -> Any:
    import httpx

    token = os.environ.get(args.token_env)
    if not token:
        raise Failed(f"${args.token_env} is not set: it must hold the server's admin token ([admin] token_env)", 2)
    url = (args.url or os.environ.get("FASTROUTE_URL") or DEFAULT_URL).rstrip("/")
    try:
        resp = httpx.request(method, url + path, json=body, params=params, timeout=30,
                             headers={"authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        raise Failed(f"cannot reach {url} ({type(exc).__name__}): is fastroute running there?") from None
    try:
        answer = resp.json()
    except ValueError:
        answer = None
    if resp.status_code >= 400:
        message = (answer or {}).get("error", {}).get("message") if isinstance(answer, dict) else None
        raise Failed(f"{message or resp.text[:200] or 'no answer'} (HTTP {resp.status_code} from {url})")
    return answer


def _segment(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def describe(key: dict[str, Any]) -> str:
    return (f"models {' '.join(key['models'])}; rate limit {_rate(key['rate_limit'])}; "
            f"budget {_budget(key['budget'])}")


def _rate(rate: dict[str, Any] | None) -> str:
    if not rate:
        return "none"
    parts = [f"{rate['requests_per_minute']} req/min" if rate.get("requests_per_minute") else "",
             f"{rate['tokens_per_minute']} tok/min" if rate.get("tokens_per_minute") else ""]
    return ", ".join(p for p in parts if p) or "none"


def _budget(budget: dict[str, Any] | None) -> str:
    if not budget:
        return "none"
    period = budget["period"]
    return f"${budget['usd']:g} " + ("in total" if period == "total" else f"a {period}")


def _secret(key: dict[str, Any]) -> None:
    if key.get("key"):
        print("secret (shown this once; give it to the key's holder now):")
        print(key["key"])


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())

"""Requests with two client keys, sessions and priced models through the stub, and what the dashboard,
the TUI and ``watch`` must show for them: cost and tokens by key and by session, worked out by hand
from the configured prices and the stub's usage (never from fastroute's own figures)."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import httpx

from tests.stub_upstream import StubUpstream

ALICE, BOB = "alice-secret-0123", "bob-secret-4567"
#: the viewers' token: a client key sees only its own requests, the admin token every request
ADMIN = "spend-admin-token-8910"
SECRETS = {"alice": ALICE, "bob": BOB}
ENV = {"FR_ALICE_KEY": ALICE, "FR_BOB_KEY": BOB, "FR_SPEND_ADMIN": ADMIN}
#: USD per million tokens: (prompt, completion, cached prompt or None for the prompt price)
PRICES = {"stub-alpha": (Fraction(3), Fraction(15), Fraction(3, 10)), "stub-beta": (Fraction(5, 4), Fraction(10), None)}
#: the rows a by-key / by-session table shows before "others"
GROUP_ROWS = 8


def config(stub: StubUpstream) -> str:
    """Keys alice and bob (any model), the stub for every model, stub-alpha and stub-beta priced."""
    return f"""
[server]
dashboard = true
[admin]
token_env = "FR_SPEND_ADMIN"
[[keys]]
name = "alice"
key_env = "FR_ALICE_KEY"
models = ["*"]
[[keys]]
name = "bob"
key_env = "FR_BOB_KEY"
models = ["*"]
[[providers]]
name = "stub"
format = "openai"
base_url = "{stub.base_url}"
[[routers]]
type = "prefix"
model_prefix = ""
provider = "stub"
[pricing."stub-alpha"]
prompt_cost_per_million = 3.0
completion_cost_per_million = 15.0
cached_prompt_cost_per_million = 0.3
[pricing."stub-beta"]
prompt_cost_per_million = 1.25
completion_cost_per_million = 10.0
"""


def stub_usage(content: str) -> tuple[int, int, int]:
    """(prompt, completion, cached) tokens of the stub's JSON answer to ``content``: it says "stub: <content>",
    counts its words as completion tokens, and always 5 prompt tokens of which 2 cached."""
    return 5, len(f"stub: {content}".split()), 2


def cost_micros(model: str, prompt: int, completion: int, cached: int) -> int:
    """The configured prices applied by hand, rounded half up to whole micro-dollars (a model without
    a price costs the provider's cost_per_1m_tokens, 0 by default)."""
    if model not in PRICES:
        return 0
    p, c, cp = PRICES[model]
    total = (prompt - cached) * p + cached * (p if cp is None else cp) + completion * c  # tokens × USD/M = µUSD
    return math.floor(total + Fraction(1, 2))


def usd(micros: int) -> str:
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


class Sender:
    """Sends chat requests as a key, with a session, and remembers what was sent."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent: list[dict[str, Any]] = []

    def __call__(self, key: str, session: str | None, model: str, content: str,
                 header: str = "x-session-id") -> None:
        headers = {"authorization": f"Bearer {SECRETS[key]}", **({header: session} if session else {})}
        resp = httpx.post(f"{self.url}/v1/chat/completions", timeout=30, headers=headers,
                          json={"model": model, "messages": [{"role": "user", "content": content}]})
        ok = model != "stub-error-500"
        assert resp.status_code == 200 if ok else resp.status_code >= 500
        if ok:  # what the stub answered is what the figures must sum
            assert resp.json()["usage"]["completion_tokens"] == stub_usage(content)[1]
        self.sent.append({"key_name": key, "session": session, "model": model, "content": content, "ok": ok})

    def cost(self) -> int:
        return sum(cost_micros(r["model"], *stub_usage(r["content"])) for r in self.sent if r["ok"])

    def rows(self, field: str) -> list[list[str]]:
        """A table's rows as they must be shown: per name (``field`` of what was sent), requests, cost, and
        prompt, completion and cached tokens; biggest cost first (then requests, then the name, a request
        without one first, as "—"); past GROUP_ROWS rows the rest summed as "others (n)"."""
        groups: dict[str | None, list[int]] = {}
        for r in self.sent:
            g = groups.setdefault(r[field], [0, 0, 0, 0, 0, 0])  # requests, prompt, completion, cached, µUSD, priced
            g[0] += 1
            if r["ok"]:
                prompt, completion, cached = stub_usage(r["content"])
                g[1] += prompt
                g[2] += completion
                g[3] += cached
                g[4] += cost_micros(r["model"], prompt, completion, cached)
                g[5] = 1
        ranked = sorted(groups.items(), key=lambda kv: (-kv[1][4], -kv[1][0], (0, "") if kv[0] is None else (1, kv[0])))

        def line(label: str, g: list[int]) -> list[str]:
            return [label, str(g[0]), usd(g[4]) if g[5] else "", *(str(v) for v in g[1:4])]

        rows = [line("—" if name is None else name, g) for name, g in ranked[:GROUP_ROWS]]
        if rest := [g for _, g in ranked[GROUP_ROWS:]]:
            summed = [sum(g[i] for g in rest) for i in range(5)] + [max(g[5] for g in rest)]
            rows.append(line(f"others ({len(rest)})", summed))
        return rows

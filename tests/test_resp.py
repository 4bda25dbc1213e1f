"""The lean RESP2 client (``fastroute.governance.resp``), on asyncio's loop and on uvloop.

Against the real ``redis-server`` of ``tests/redis_server.py`` (with a password; with
``FASTROUTE_REQUIRE_REDIS=1`` these tests must run): the handshake (AUTH right and wrong,
SELECT, a unix socket), the replies of the counters' own Lua scripts next to redis-py's for the
same calls, ``NOSCRIPT`` reloads, pipelining, a huge reply, Redis killed and started again on
the same port.  Plain socket servers made in the test for what a real Redis will not do: accept
and never answer, answer one byte at a time, answer garbage or more than asked.  The parser
alone: every reply split at every offset, and random replies cut at random places.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import subprocess
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastroute.governance.counters import ADD_LUA, MERGE_LUA, TAKE_LUA, WINDOW_MS
from fastroute.governance.resp import (
    RespClient,
    RespError,
    RespException,
    RespParser,
    RespTimeout,
    RespUnavailable,
    _parse_url,
    encode,
)
from tests import fuzz_strategies as fs
from tests.conftest import free_port
from tests.redis_server import PASSWORD, REDIS, RedisServer, need_redis, redis_url

fs.load_profile()

Run = Callable[[Awaitable[Any]], Any]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Run a coroutine to its end on a fresh loop of the kind the test is parametrized with; then
    check it left no task running and no transport unclosed (a ResourceWarning)."""
    def runner(coro: Awaitable[Any]) -> Any:
        async def checked() -> Any:
            try:
                return await coro
            finally:
                left = asyncio.all_tasks() - {asyncio.current_task()}
                assert not left, f"tasks left running: {left}"

        gc.collect()  # what earlier tests left for the collector is not this test's leak
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", ResourceWarning)
            if request.param == "uvloop":
                import uvloop

                result = uvloop.run(checked())
            else:
                result = asyncio.run(checked())
            gc.collect()
        leaks = [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)]
        assert not leaks, leaks
        return result
    return runner


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """Keys of this test alone on the module's shared server."""
    name = request.node.name.replace("[", "-").replace("]", "")  # no glob characters: KEYS reads them
    return f"t-resp-{name}-{time.monotonic_ns()}:"


def _client(server: RedisServer, db: int = 0, **kwargs: Any) -> RespClient:
    return RespClient(server.url.rpartition("/")[0] + f"/{db}", PASSWORD, **kwargs)


def _redis_py(server: RedisServer, db: int = 0) -> Any:
    import redis.asyncio as redis

    return redis.from_url(server.url.rpartition("/")[0] + f"/{db}", password=PASSWORD)


class Contains(bytes):
    """Equal to any bytes holding it."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, bytes) and bytes(self) in other

    __hash__ = bytes.__hash__


# ── URLs and encoding ─────────────────────────────────────────────────────

@pytest.mark.parametrize(("url", "parsed"), [
    ("redis://127.0.0.1:6380/2", ("tcp", ("127.0.0.1", 6380), None, None, 2)),
    ("redis://redis.internal", ("tcp", ("redis.internal", 6379), None, None, 0)),
    ("redis://cache:7000/", ("tcp", ("cache", 7000), None, None, 0)),
    ("redis://[::1]:6390/1", ("tcp", ("::1", 6390), None, None, 1)),
    ("redis://:s%40cret@h:1/0", ("tcp", ("h", 1), None, "s@cret", 0)),
    ("redis://alice:pw@h/3?ignored=1", ("tcp", ("h", 6379), "alice", "pw", 3)),
    ("REDIS://h:6379/0", ("tcp", ("h", 6379), None, None, 0)),
    ("unix:///run/redis.sock", ("unix", "/run/redis.sock", None, None, 0)),
    ("unix:///run/redis.sock?db=4", ("unix", "/run/redis.sock", None, None, 4)),
    ("rediss://:pw@cache.internal:6380/1", ("tls", ("cache.internal", 6380), None, "pw", 1)),
])
def test_url_forms(url: str, parsed: tuple[Any, ...]) -> None:
    assert _parse_url(url) == parsed


@pytest.mark.parametrize(("url", "says"), [
    (f"http://:{PASSWORD}@h/0", "http:// is not a Redis URL"),
    (f"redis://:{PASSWORD}@h:port/0", "the port of the redis:// URL is not a number"),
    (f"redis://:{PASSWORD}@h:70000/0", "the port of the redis:// URL is not a number"),
    (f"redis://:{PASSWORD}@h:6379/zero", "the database of the redis:// URL is not a number"),
    ("unix:///run/redis.sock?db=x", "the database of the unix:// URL is not a number"),
    (PASSWORD, "a Redis URL starts with redis:// or unix://"),
])
def test_url_refused_with_a_reason_and_never_the_password(url: str, says: str) -> None:
    with pytest.raises(ValueError, match="^" + says.replace("(", r"\(").replace(")", r"\)")) as caught:
        RespClient(url)
    assert PASSWORD not in str(caught.value)


def test_where_and_repr_hide_the_password() -> None:
    client = RespClient(f"redis://alice:{PASSWORD}@127.0.0.1:6390/3", timeout_s=0.5)
    assert client.where == "redis://127.0.0.1:6390/3"
    assert repr(client) == "<RespClient redis://127.0.0.1:6390/3>"
    assert RespClient("unix:///run/r.sock?db=2", PASSWORD).where == "unix:///run/r.sock/2"


def test_encode() -> None:
    assert encode(("SET", b"k\r\n", 12, -3, 1.5, "é")) == (
        b"*6\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n12\r\n$2\r\n-3\r\n$3\r\n1.5\r\n$2\r\n\xc3\xa9\r\n")
    assert encode(("SET", "k", b"x" * 5000)) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5000\r\n" + b"x" * 5000 + b"\r\n"
    assert encode(("PING",)) == b"*1\r\n$4\r\nPING\r\n"
    with pytest.raises(TypeError, match="not bool"):
        encode(("SET", "k", True))
    with pytest.raises(TypeError, match="not NoneType"):
        encode(("SET", "k", None))
    with pytest.raises(ValueError):
        encode(())


def test_script_encodes_evalsha_as_encode_does() -> None:
    script = RespClient("redis://127.0.0.1:1/0").script(TAKE_LUA)
    keys, args = ("a:m:1", "a:m:0", "a:s:é"), (59_999, -1, 10**12, 0, b"raw", 2.5)
    assert script.encode(keys, args) == encode(script.command(keys, args))
    assert script.command(keys, args)[:3] == ("EVALSHA", script.sha, 3)


# ── the parser ────────────────────────────────────────────────────────────

#: (wire bytes, what they decode to): every kind, nested, nil, negative, a bulk string holding CRLF
REPLIES: list[tuple[bytes, Any]] = [
    (b"+OK\r\n", "OK"),
    (b":0\r\n", 0),
    (b":-9223372036854775808\r\n", -(2**63)),
    (b"$5\r\nhello\r\n", b"hello"),
    (b"$0\r\n\r\n", b""),
    (b"$8\r\na\r\nb\r\n\r\n\r\n", b"a\r\nb\r\n\r\n"),
    (b"$-1\r\n", None),
    (b"*-1\r\n", None),
    (b"*0\r\n", []),
    (b"*6\r\n:1\r\n:-2\r\n:30\r\n:0\r\n:9223372036854775807\r\n:5\r\n", [1, -2, 30, 0, 2**63 - 1, 5]),
    (b"*3\r\n:1\r\n$2\r\n:2\r\n:3\r\n", [1, b":2", 3]),
    (b"*2\r\n:1\r\n+:2\r\n", [1, ":2"]),
    (b"*4\r\n*2\r\n:1\r\n*1\r\n$-1\r\n*0\r\n$3\r\n\r\n:\r\n*-1\r\n", [[1, [None]], [], b"\r\n:", None]),
    (b"*2\r\n-ERR inside\r\n:7\r\n", [RespError("ERR inside"), 7]),
    (b"-NOSCRIPT No matching script. Please use EVAL.\r\n", RespError("NOSCRIPT No matching script. Please use EVAL.")),
]


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, RespError):
        return type(got) is RespError and got.message == want.message and got.code == want.code
    if isinstance(want, list):
        return type(got) is list and len(got) == len(want) and all(map(_same, got, want))
    return type(got) is type(want) and got == want


def test_parser_splits_at_every_offset() -> None:
    wire = b"".join(w for w, _ in REPLIES)
    want = [v for _, v in REPLIES]
    for cut in range(len(wire) + 1):
        parser = RespParser()
        got = parser.feed(wire[:cut]) + parser.feed(wire[cut:])
        assert _same(got, want), cut
    parser = RespParser()
    got = [reply for i in range(len(wire)) for reply in parser.feed(wire[i:i + 1])]  # a byte at a time
    assert _same(got, want)


def test_parser_each_reply_split_twice_everywhere() -> None:
    for wire, want in REPLIES:
        for i in range(len(wire) + 1):
            for j in range(i, len(wire) + 1):
                parser = RespParser()
                got = parser.feed(wire[:i]) + parser.feed(wire[i:j]) + parser.feed(wire[j:])
                assert len(got) == 1 and _same(got[0], want), (wire, i, j)


@st.composite
def _reply(draw: st.DrawFn) -> tuple[bytes, Any]:
    line = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=12)
    leaf = st.one_of(
        st.integers(-(2**63), 2**63 - 1).map(lambda n: (b":%d\r\n" % n, n)),
        st.binary(max_size=40).map(lambda b: (b"$%d\r\n%b\r\n" % (len(b), b), b)),
        line.map(lambda s: (b"+" + s.encode() + b"\r\n", s)),
        line.map(lambda s: (b"-ERR " + s.encode() + b"\r\n", RespError("ERR " + s))),
        st.sampled_from([(b"$-1\r\n", None), (b"*-1\r\n", None)]),
    )
    tree = st.recursive(leaf, lambda kids: st.lists(kids, max_size=6).map(
        lambda items: (b"*%d\r\n" % len(items) + b"".join(w for w, _ in items), [v for _, v in items])), max_leaves=12)
    return draw(tree)


@settings(max_examples=fs.examples(200))
@given(st.lists(_reply(), min_size=1, max_size=5), st.data())
def test_parser_random_replies_cut_anywhere(replies: list[tuple[bytes, Any]], data: st.DataObject) -> None:
    wire = b"".join(w for w, _ in replies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    parser = RespParser()
    got: list[Any] = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        got += parser.feed(wire[start:end])
    assert _same(got, [v for _, v in replies])


@pytest.mark.parametrize("wire", [b"?what\r\n", b"$3\r\nabcd\r\n", b":12a\r\n", b"*x\r\n", b"$\r\n"])
def test_parser_refuses_what_is_not_resp2(wire: bytes) -> None:
    with pytest.raises(ValueError):
        RespParser().feed(wire)


def test_parser_big_bulk_in_small_chunks_is_linear() -> None:
    """A bulk string of known size is not parsed again until it is all in (else: quadratic copying)."""
    body = os.urandom(1 << 20) * 24  # 24 MB
    wire = b"$%d\r\n%b\r\n" % (len(body), body)
    parser = RespParser()
    started = time.perf_counter()
    got = [r for i in range(0, len(wire), 16384) for r in parser.feed(wire[i:i + 16384])]
    assert time.perf_counter() - started < 3  # ~0.1 s; parsing it again at every chunk takes minutes
    assert len(got) == 1 and got[0] == body


# ── against the real redis-server ─────────────────────────────────────────

def test_commands_and_replies(run: Run, redis_server: RedisServer, prefix: str) -> None:
    async def go() -> None:
        client = _client(redis_server)
        try:
            assert await client.execute("PING") == "PONG"
            assert await client.execute("SET", prefix + "k", b"v\r\n\x00", "PX", 10_000) == "OK"
            assert await client.execute("GET", prefix + "k") == b"v\r\n\x00"
            assert await client.execute("GET", prefix + "missing") is None
            assert await client.execute("INCRBY", prefix + "n", -7) == -7
            assert await client.execute("INCRBYFLOAT", prefix + "f", 0.5) == b"0.5"
            lua = "return {1, {-2, 'a\\r\\nb'}, false, {}, redis.status_reply('FINE')}"
            assert await client.execute("EVAL", lua, 0) == [1, [-2, b"a\r\nb"], None, [], "FINE"]
            with pytest.raises(RespError) as caught:
                await client.execute("INCR", prefix + "k")
            assert caught.value.code == "ERR"
            assert await client.execute("ECHO", "é") == "é".encode()  # the connection still in step
        finally:
            await client.close()
    run(go())


def test_auth_with_the_right_password(run: Run, redis_server: RedisServer) -> None:
    async def go() -> None:
        for client in (_client(redis_server), RespClient(f"redis://:{PASSWORD}@127.0.0.1:{redis_server.port}/0"),
                       RespClient(f"redis://default:{PASSWORD}@127.0.0.1:{redis_server.port}/0")):
            try:
                assert await client.execute("PING") == "PONG"
            finally:
                await client.close()
    run(go())


def test_a_wrong_or_missing_password_is_a_resp_error_without_the_password(run: Run, redis_server: RedisServer) -> None:
    async def go() -> None:
        wrong = RespClient(redis_server.url, PASSWORD + "-not")
        none, empty = RespClient(redis_server.url), RespClient(redis_server.url, "")
        try:
            for client, code in ((wrong, "WRONGPASS"), (none, "NOAUTH"), (empty, "NOAUTH")):
                for _ in range(2):  # and again on the next connection
                    with pytest.raises(RespError) as caught:
                        await client.execute("PING")
                    assert caught.value.code == code
                    assert PASSWORD not in str(caught.value) and PASSWORD not in repr(caught.value)
                    assert not isinstance(caught.value, OSError)
            # commands pipelined behind a refused AUTH fail with its error, not with a reply of theirs
            results = await asyncio.gather(*(wrong.execute("PING") for _ in range(5)), return_exceptions=True)
            assert all(type(r) is RespError and r.code == "WRONGPASS" for r in results)
        finally:
            for client in (wrong, none, empty):
                await client.close()
    run(go())


def test_an_error_reply_quoting_the_password_is_scrubbed(run: Run, redis_server: RedisServer) -> None:
    async def go() -> None:
        client = _client(redis_server)
        try:
            with pytest.raises(RespError) as caught:
                await client.execute("NO-SUCH-COMMAND", PASSWORD)  # Redis quotes the arguments
            assert "'***'" in str(caught.value) and PASSWORD not in str(caught.value)
        finally:
            await client.close()
    run(go())


def test_select(run: Run, redis_server: RedisServer, prefix: str) -> None:
    async def go() -> None:
        five, zero, py_five = _client(redis_server, 5), _client(redis_server), _redis_py(redis_server, 5)
        try:
            assert await five.execute("SET", prefix + "db", "five") == "OK"
            assert await zero.execute("GET", prefix + "db") is None
            assert await py_five.get(prefix + "db") == b"five"
            assert await five.execute("CLIENT", "INFO") == Contains(b" db=5 ")
        finally:
            await five.close()
            await zero.close()
            await py_five.aclose()
        with pytest.raises(RespError, match="DB index is out of range"):
            bad = _client(redis_server, 99)
            try:
                await bad.execute("PING")
            finally:
                await bad.close()
    run(go())


def test_unix_socket_with_a_db(run: Run, tmp_path: Path) -> None:
    need_redis()
    assert REDIS is not None
    sock = tmp_path / "redis.sock"
    proc = subprocess.Popen([REDIS, "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no",
                             "--requirepass", PASSWORD], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline and proc.poll() is None, "redis-server did not start"
            time.sleep(0.05)

        async def go() -> None:
            client = RespClient(f"unix://{sock}?db=3", PASSWORD)
            try:
                assert await client.execute("SET", "u", 1) == "OK"
                assert await client.execute("CLIENT", "INFO") == Contains(b" db=3 ")
            finally:
                await client.close()
        run(go())
    finally:
        proc.kill()
        proc.wait(10)


def test_script_reloaded_after_script_flush(run: Run, redis_server: RedisServer, prefix: str) -> None:
    async def go() -> None:
        client = _client(redis_server)
        try:
            script = client.script("return {KEYS[1], ARGV[1] + 1}")
            assert await script([prefix + "a"], [1]) == [(prefix + "a").encode(), 2]
            await client.execute("SCRIPT", "FLUSH")
            assert await script([prefix + "a"], [2]) == [(prefix + "a").encode(), 3]  # SCRIPT LOAD, then again
            assert await client.execute("SCRIPT", "EXISTS", script.sha) == [1]
            await client.execute("SCRIPT", "FLUSH")
            assert await client.evalsha(script.sha, [prefix + "b"], [3]) == [(prefix + "b").encode(), 4]
            await client.execute("SCRIPT", "FLUSH")
            many = await client.execute_many([("PING",), script.command([prefix + "c"], [4]), ("PING",),
                                              script.command([prefix + "d"], [5])])
            assert many == ["PONG", [(prefix + "c").encode(), 5], "PONG", [(prefix + "d").encode(), 6]]
            with pytest.raises(RespError) as caught:  # a sha no script of this client has: not reloaded
                await client.evalsha("0" * 40, [], [])
            assert caught.value.code == "NOSCRIPT"
            broken = client.script("return {")
            with pytest.raises(RespError, match="Error compiling script"):
                await broken([], [])
            await client.execute("SET", prefix + "str", "x")
            with pytest.raises(RespError, match="not an integer"):  # an error raised in the script
                await client.script("return redis.call('INCR', KEYS[1])")([prefix + "str"], [])
        finally:
            await client.close()
    run(go())


def test_counters_scripts_answer_as_with_redis_py(run: Run, redis_server: RedisServer, prefix: str) -> None:
    """The same calls of TAKE_LUA, ADD_LUA and MERGE_LUA through both clients, on keys of their own:
    the same replies (values and types) and the same keys left in Redis."""
    now_ms = 1_790_000_000_000 + 59_000  # late in a minute: the previous minute weighs little
    minute, elapsed = divmod(now_ms, WINDOW_MS)

    def calls(base: str) -> list[tuple[str, list[Any], list[Any]]]:
        cur, prev, spend = f"{base}m:{minute}", f"{base}m:{minute - 1}", f"{base}s:2026-09"
        keep = (minute + 2) * WINDOW_MS + 60_000 - now_ms
        made: list[tuple[str, list[Any], list[Any]]] = [
            ("merge", [f"{base}merged:b1", prev, spend], [3_600_000, "m", 5, 700, 60_000, "s", 1_000, 0, 0]),
            ("merge", [f"{base}merged:b1", prev, spend], [3_600_000, "m", 5, 700, 60_000, "s", 1_000, 0, 0]),
        ]
        for i in range(5):  # rpm 4: the fifth refused; a budget of 1,500 micros spent by the adds
            made.append(("take", [cur, prev, spend], [elapsed, 4, 10**6, 1_500 + 1_000 * (i < 2), keep]))
            made.append(("add", [cur, spend], [120, keep, 200, 3_600_000]))
        made.append(("add", [cur, spend], [0, keep, 0, 0]))
        made.append(("take", [cur, prev, spend], [elapsed, -1, 200, -1, keep]))  # tpm reached
        return made

    async def go() -> None:
        ours, theirs = _client(redis_server), _redis_py(redis_server)
        try:
            scripts = {"take": ours.script(TAKE_LUA), "add": ours.script(ADD_LUA), "merge": ours.script(MERGE_LUA)}
            registered = {"take": theirs.register_script(TAKE_LUA), "add": theirs.register_script(ADD_LUA),
                          "merge": theirs.register_script(MERGE_LUA)}
            await ours.execute("SCRIPT", "FLUSH")  # both start with NOSCRIPT
            got = [await scripts[kind](keys, args) for kind, keys, args in calls(prefix + "ours:")]
            want = [await registered[kind](keys=keys, args=args) for kind, keys, args in calls(prefix + "theirs:")]
            assert got == want
            assert [type(r) for r in got] == [type(r) for r in want]
            assert all(type(x) is int for r in got if isinstance(r, list) for x in r)
            assert got[0] == 1 and got[1] == 0  # the batch's marker: added once
            assert got[-1][0] == 2 and any(r[0] == 1 for r in got[2::2][:5])  # tpm, then rpm refused
            their_keys = sorted(await theirs.keys(f"{prefix}theirs:*"))
            assert len(their_keys) == 4  # two minutes, the spend, the marker
            assert sorted(await ours.execute("KEYS", f"{prefix}ours:*")) == \
                [k.replace(b":theirs:", b":ours:") for k in their_keys]
            for key in their_keys:
                assert await ours.execute("DUMP", key.replace(b":theirs:", b":ours:")) == await theirs.dump(key)
        finally:
            await ours.close()
            await theirs.aclose()
    run(go())


def test_pipelining_many_commands(run: Run, redis_server: RedisServer, prefix: str) -> None:
    async def go() -> None:
        client = _client(redis_server)
        try:
            replies = await client.execute_many(("INCR", prefix + "n") for _ in range(10_000))
            assert replies == list(range(1, 10_001))
            # 1,000 callers at once, answered in the order they sent
            replies = await asyncio.gather(*(client.execute("INCR", prefix + "m") for _ in range(1_000)))
            assert replies == list(range(1, 1_001))
            assert await client.execute("CLIENT", "ID") == await client.execute("CLIENT", "ID")  # one connection
            # an error among them: raised once all are in; or left in place
            many = [("SET", prefix + "s", "x"), ("INCR", prefix + "s"), ("GET", prefix + "s")]
            with pytest.raises(RespError) as caught:
                await client.execute_many(many)
            assert "not an integer" in str(caught.value)
            got = await client.execute_many(many, raise_on_error=False)
            assert got[0] == "OK" and type(got[1]) is RespError and got[2] == b"x"
            assert await client.execute_many([]) == []
        finally:
            await client.close()
    run(go())


def test_concurrent_first_commands_share_one_connection(run: Run, redis_server: RedisServer) -> None:
    async def go() -> None:
        client = _client(redis_server)
        try:
            ids = await asyncio.gather(*(client.execute("CLIENT", "ID") for _ in range(100)))
            assert len(set(ids)) == 1
        finally:
            await client.close()
    run(go())


def test_huge_replies(run: Run, redis_server: RedisServer, prefix: str) -> None:
    async def go() -> None:
        client = _client(redis_server, timeout_s=10)
        try:
            value = os.urandom(1 << 20) * 32  # 32 MB
            assert await client.execute("SET", prefix + "big", value) == "OK"
            assert await client.execute("GET", prefix + "big") == value
            await client.execute_many(("RPUSH", prefix + "list", *range(i, i + 1_000)) for i in range(0, 200_000, 1_000))
            items = await client.execute("LRANGE", prefix + "list", 0, -1)
            assert len(items) == 200_000 and items[0] == b"0" and items[-1] == b"199999"
            await client.execute("DEL", prefix + "big", prefix + "list")
        finally:
            await client.close()
    run(go())


def test_cancelled_command_leaves_the_connection_in_step(run: Run, redis_server: RedisServer, prefix: str) -> None:
    async def go() -> None:
        client = _client(redis_server)
        try:
            waiting = asyncio.ensure_future(client.execute("BLPOP", prefix + "q", 0.3))
            await asyncio.sleep(0.05)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert await client.execute("PING") == "PONG"  # not the BLPOP's nil
            assert await client.execute("RPUSH", prefix + "q", "x") == 1
        finally:
            await client.close()
    run(go())


def test_a_command_waits_at_most_timeout_s_then_the_next_reconnects(run: Run, redis_server: RedisServer,
                                                                     prefix: str) -> None:
    async def go() -> None:
        client = _client(redis_server, timeout_s=0.3)
        try:
            first = await client.execute("CLIENT", "ID")
            started = time.monotonic()
            slow = [asyncio.ensure_future(client.execute("BLPOP", prefix + "never", 5)) for _ in range(3)]
            results = await asyncio.gather(*slow, return_exceptions=True)
            took = time.monotonic() - started
            assert all(type(r) is RespTimeout for r in results), results
            assert 0.28 <= took < 1.5
            assert "did not answer within 0.3 s" in str(results[0]) and isinstance(results[0], OSError)
            assert await client.execute("CLIENT", "ID") != first  # a new connection
        finally:
            await client.close()
    run(go())


def test_close_fails_waiting_commands_and_releases_the_transport(run: Run, redis_server: RedisServer,
                                                                 prefix: str) -> None:
    async def go() -> None:
        client = _client(redis_server)
        assert await client.execute("PING") == "PONG"
        conn = client._conn
        assert conn is not None
        waiting = asyncio.ensure_future(client.execute("BLPOP", prefix + "q", 5))
        await asyncio.sleep(0.05)
        await client.close()
        assert conn.transport.is_closing() and conn.lost.done()
        with pytest.raises(RespUnavailable, match="closed"):
            await waiting
        with pytest.raises(RespUnavailable, match="the client is closed"):
            await client.execute("PING")
        await client.close()  # again: nothing to do
    run(go())


def test_refused_then_redis_started_on_that_port(run: Run) -> None:
    need_redis()
    port = free_port()

    async def go() -> None:
        client = RespClient(redis_url(port), timeout_s=1)
        try:
            started = time.monotonic()
            with pytest.raises(RespUnavailable) as caught:
                await client.execute("PING")
            assert time.monotonic() - started < 0.5  # refused at once, no timeout waited
            assert str(caught.value) == f"cannot reach redis://127.0.0.1:{port}/0 (ConnectionRefusedError)"
            assert isinstance(caught.value.__cause__, ConnectionRefusedError)
            server = RedisServer(port)
            try:
                assert await client.execute("PING") == "PONG"
            finally:
                server.stop()
        finally:
            await client.close()
    run(go())


def test_redis_killed_midway_then_back_on_the_same_port(run: Run) -> None:
    server = RedisServer(free_port(), PASSWORD)

    async def go() -> None:
        client = RespClient(server.url, PASSWORD, timeout_s=2)
        try:
            assert await client.execute("SET", "k", "v") == "OK"
            in_flight = [asyncio.ensure_future(client.execute("BLPOP", "q", 5)) for _ in range(3)]
            await asyncio.sleep(0.1)
            await asyncio.to_thread(server.kill)
            results = await asyncio.gather(*in_flight, return_exceptions=True)
            assert all(type(r) is RespUnavailable for r in results), results
            assert str(results[0]).startswith(f"{server.url} closed the connection")
            with pytest.raises(RespUnavailable, match="cannot reach"):  # down: refused
                await client.execute("PING")
            back = await asyncio.to_thread(RedisServer, server.port, PASSWORD)
            try:
                assert await client.execute("PING") == "PONG"  # the next command reconnects
                assert await client.execute("GET", "k") is None  # a new, empty Redis
                script = client.script("return 7")
                assert await script() == 7
                await asyncio.to_thread(back.kill)
                with pytest.raises(RespUnavailable):
                    await script()
                again = await asyncio.to_thread(RedisServer, server.port, PASSWORD)
                try:
                    assert await script() == 7  # reconnected, and NOSCRIPT reloaded
                finally:
                    again.stop()
            finally:
                if back.proc.poll() is None:
                    back.stop()
        finally:
            await client.close()
    try:
        run(go())
    finally:
        if server.proc.poll() is None:
            server.stop()


# ── plain socket servers: what a real Redis will not do ───────────────────

def test_a_server_that_accepts_and_never_answers(run: Run) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # the kernel accepts the connection; nobody reads or answers
        port = listener.getsockname()[1]

        async def go() -> None:
            client = RespClient(redis_url(port), PASSWORD, timeout_s=0.3)
            try:
                for _ in range(2):  # and again on a new connection
                    started = time.monotonic()
                    results = await asyncio.gather(*(client.execute("PING") for _ in range(4)),
                                                   return_exceptions=True)
                    assert 0.28 <= time.monotonic() - started < 1.5
                    assert all(type(r) is RespTimeout for r in results), results
                    assert PASSWORD not in str(results[0])
            finally:
                await client.close()
        run(go())


def test_no_connection_within_timeout_s(run: Run) -> None:
    """A listener whose accept queue is full: the kernel drops the SYN, the connect waits."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):  # fill the queue (a backlog of 0 still holds one or two)
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        time.sleep(0.1)
        try:
            async def go() -> None:
                client = RespClient(redis_url(port), timeout_s=0.3)
                try:
                    started = time.monotonic()
                    with pytest.raises(RespTimeout, match="no connection within 0.3 s"):
                        await client.execute("PING")
                    assert time.monotonic() - started < 1.5
                finally:
                    await client.close()
            run(go())
        finally:
            for s in fillers:
                s.close()


Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def plain_server(answer: Answer) -> AsyncIterator[tuple[str, list[int]]]:
    """An asyncio server on 127.0.0.1 answering each connection with ``answer``; yields its URL and
    the number of connections it took (a one-item list)."""
    taken = [0]
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        taken[0] += 1
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield redis_url(server.sockets[0].getsockname()[1]), taken
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def _commands(reader: asyncio.StreamReader) -> int:
    """Read one whole RESP2 command (an array of bulk strings); its number of arguments."""
    head = await reader.readuntil(b"\r\n")
    n = int(head[1:-2])
    for _ in range(n):
        size = int((await reader.readuntil(b"\r\n"))[1:-2])
        await reader.readexactly(size + 2)
    return n


def test_replies_dribbled_one_byte_at_a_time(run: Run) -> None:
    reply = b"*3\r\n:-1\r\n$4\r\na\r\nb\r\n*2\r\n$-1\r\n+OK\r\n"

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _commands(reader)
            for i in range(len(reply)):
                writer.write(reply[i:i + 1])
                await writer.drain()
                await asyncio.sleep(0)

    async def go() -> None:
        async with plain_server(answer) as (url, _):
            client = RespClient(url)
            try:
                got = await asyncio.gather(*(client.execute("X") for _ in range(3)))
                assert got == [[-1, b"a\r\nb", [None, "OK"]]] * 3
            finally:
                await client.close()
    run(go())


def test_garbage_or_a_reply_nobody_asked_for_drops_the_connection(run: Run) -> None:
    answers = iter([b"+PONG\r\n+EXTRA\r\n", b"%3\r\n", b"+PONG\r\n"])

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _commands(reader)
            writer.write(next(answers))
            await writer.drain()

    async def go() -> None:
        async with plain_server(answer) as (url, taken):
            client = RespClient(url)
            try:
                assert await client.execute("PING") == "PONG"  # then one more reply: the connection is dropped
                with pytest.raises(RespUnavailable, match="not RESP2"):  # a RESP3 map: not ours
                    await client.execute("PING")
                assert await client.execute("PING") == "PONG"
                assert taken[0] == 3
            finally:
                await client.close()
    run(go())


@pytest.mark.parametrize(("netloc", "db", "password", "prelude"), [
    ("127.0.0.1", 7, PASSWORD, encode(("AUTH", PASSWORD)) + encode(("SELECT", 7))),
    (f"alice:{PASSWORD}@127.0.0.1", 0, None, encode(("AUTH", "alice", PASSWORD))),
    (":from-url@127.0.0.1", 0, PASSWORD, encode(("AUTH", PASSWORD))),  # the argument wins
    ("127.0.0.1", 2, None, encode(("SELECT", 2))),
    ("127.0.0.1", 0, None, b""),
])
def test_handshake_is_pipelined_with_the_first_command(run: Run, netloc: str, db: int, password: str | None,
                                                       prelude: bytes) -> None:
    """AUTH and SELECT are not waited for: they arrive with the first command, in one write."""
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.05)
        seen.append(await reader.read(65536))
        writer.write(b"+OK\r\n" * prelude.count(b"*") + b"+PONG\r\n")
        await writer.drain()
        await reader.read()

    async def go() -> None:
        async with plain_server(answer) as (url, _):
            port = url.rpartition(":")[2].partition("/")[0]
            client = RespClient(f"redis://{netloc}:{port}/{db}", password)
            try:
                assert await client.execute("PING") == "PONG"
            finally:
                await client.close()
    run(go())
    assert seen == [prelude + encode(("PING",))]


def test_errors_are_one_tree() -> None:
    assert issubclass(RespError, RespException) and not issubclass(RespError, OSError)
    assert issubclass(RespUnavailable, RespException) and issubclass(RespUnavailable, OSError)
    assert issubclass(RespTimeout, RespUnavailable)
    assert str(RespUnavailable("cannot reach redis://h:1/0")) == "cannot reach redis://h:1/0"
    assert RespError("WRONGPASS invalid username-password pair").code == "WRONGPASS"


def test_rediss_speaks_tls_to_a_real_redis_server(certificate: tuple[Path, Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``rediss://``: TLS with the system's authorities (here the test's, through SSL_CERT_FILE), the
    host name checked; Redis's own TLS port, a password."""
    need_redis()
    port = free_port()
    cert, key = certificate
    proc = subprocess.Popen([str(REDIS), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                             "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                             "--tls-auth-clients", "no", "--requirepass", PASSWORD, "--save", "", "--appendonly", "no"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"redis-server could not serve TLS: {proc.stdout.read() if proc.stdout else ''}")
                assert time.monotonic() < deadline, "redis-server did not listen"
                time.sleep(0.05)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))

        async def go() -> None:
            client = RespClient(f"rediss://localhost:{port}/0", PASSWORD, timeout_s=5)
            try:
                assert await client.execute("PING") == "PONG"
                assert await client.execute("SET", "tls-key", "v") == "OK"
                assert await client.execute("GET", "tls-key") == b"v"
            finally:
                await client.close()
            plain = RespClient(f"redis://localhost:{port}/0", PASSWORD, timeout_s=1)
            try:
                with pytest.raises(RespUnavailable):  # TLS is not optional there
                    await plain.execute("PING")
            finally:
                await plain.close()

        asyncio.run(go())
    finally:
        proc.kill()
        proc.wait(10)


# ── send_soon: commands that ride with the next write ─────────────────────

def test_send_soon_rides_in_the_next_commands_write(run: Run) -> None:
    """Queued commands go ahead of the next command in the same write, their replies to on_reply."""
    writes: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            writes.append(data)
            writer.write(b":%d\r\n" % data.count(b"*") + b"".join(b":%d\r\n" % i for i in range(1, data.count(b"*"))))
            await writer.drain()

    async def go() -> None:
        async with plain_server(answer) as (url, _):
            client = RespClient(url)
            got: list[Any] = []
            try:
                assert await client.execute("PING") == 1  # connected; nothing queued
                client.send_soon(encode(("INCR", "a")), lambda r, e: got.append(("a", r, e)), linger_s=30)
                client.send_soon(encode(("INCR", "b")), lambda r, e: got.append(("b", r, e)), linger_s=30)
                assert got == [] and len(writes) == 1  # not written yet
                assert await client.execute("GET", "c") == 2  # the third reply of one write
                assert writes[1] == encode(("INCR", "a")) + encode(("INCR", "b")) + encode(("GET", "c"))
                assert got == [("a", 3, None), ("b", 1, None)]
            finally:
                await client.close()
    run(go())


def test_send_soon_alone_is_written_after_its_linger(run: Run, redis_server: RedisServer, prefix: str) -> None:
    async def go() -> None:
        client = _client(redis_server)
        try:
            await client.execute("PING")
            answered = asyncio.get_running_loop().create_future()
            client.send_soon(encode(("INCR", prefix + "n")), lambda r, e: answered.set_result((r, e)), linger_s=0.05)
            await asyncio.sleep(0.01)
            assert not answered.done()
            assert await asyncio.wait_for(answered, 2) == (1, None)
            assert await client.execute("GET", prefix + "n") == b"1"
            # flush_soon writes at once; a client not connected yet connects for it
            fresh = _client(redis_server)
            try:
                again = asyncio.get_running_loop().create_future()
                fresh.send_soon(encode(("INCR", prefix + "n")), lambda r, e: again.set_result((r, e)), linger_s=30)
                fresh.flush_soon()
                assert await asyncio.wait_for(again, 2) == (2, None)
            finally:
                await fresh.close()
        finally:
            await client.close()
    run(go())


def test_send_soon_errors_reach_on_reply(run: Run, redis_server: RedisServer, prefix: str) -> None:
    """An error reply, NOSCRIPT included (the caller's to handle), a Redis that is away, and close()."""
    async def go() -> None:
        client = _client(redis_server)
        seen: list[Any] = []
        try:
            await client.execute("SET", prefix + "s", "x")
            client.send_soon(encode(("INCR", prefix + "s")), lambda r, e: seen.append(e))
            client.send_soon(client.script("return 1").encode(), lambda r, e: seen.append((r, e)))
            await client.execute("PING")
            assert isinstance(seen[0], RespError) and seen[0].code == "ERR"
            assert seen[1] == (None, seen[1][1]) and seen[1][1].code == "NOSCRIPT"
            client.send_soon(encode(("PING",)), lambda r, e: seen.append(e), linger_s=30)
            await client.close()
            assert isinstance(seen[2], RespUnavailable) and "closed" in str(seen[2])
            client.send_soon(encode(("PING",)), lambda r, e: seen.append(e))  # after close: at once
            assert isinstance(seen[3], RespUnavailable)
        finally:
            await client.close()
        away = RespClient(redis_url(free_port()), timeout_s=0.5)
        failed = asyncio.get_running_loop().create_future()
        away.send_soon(encode(("PING",)), lambda r, e: failed.set_result(e), linger_s=0.01)
        assert isinstance(await asyncio.wait_for(failed, 3), RespUnavailable)
        await away.close()
    run(go())

"""Events across instances through Redis: two real fastroute processes and a real redis-server
(Debian's, installed by .ci/run), a password kept out of every output, Redis down and back."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fastroute.config import config_from_dict
from fastroute.errors import ConfigError
from tests.conftest import ROOT, FastrouteProcess, free_port
from tests.redis_server import PASSWORD, RedisServer, need_redis
from tests.test_recording import Feed


def config(redis_port: int, password_env: str | None = None) -> str:
    events = f'[events]\nredis_url = "redis://127.0.0.1:{redis_port}/0"\nchannel = "fastroute-test"\n'
    if password_env:
        events += f'redis_password_env = "{password_env}"\n'
    return (events + '\n[[providers]]\nname = "echo"\nformat = "echo"\n\n'
            '[[routers]]\ntype = "prefix"\nmodel_prefix = ""\nprovider = "echo"\n')


def chat(proc: FastrouteProcess, model: str) -> str:
    resp = httpx.post(f"{proc.url}/v1/chat/completions", timeout=30,
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 200
    return resp.headers["x-request-id"]


def completes(feed: Feed, request_id: str) -> int:
    return sum(1 for e in feed.events if e.get("type") == "complete" and e.get("id") == request_id)


def crossed_over(sender: FastrouteProcess, feed: Feed, receiver: FastrouteProcess, within_s: float = 15) -> None:
    """Send requests to ``sender`` until one shows on ``feed`` (a viewer of ``receiver``)."""
    deadline = time.monotonic() + within_s
    while True:
        probe = chat(sender, "probe")
        try:
            feed.wait(lambda evs: completes(feed, probe) == 1, timeout=1)
            return
        except AssertionError:
            assert time.monotonic() < deadline, f"events never crossed over:\n{receiver.output}\n{sender.output}"


@pytest.fixture
def instances(tmp_path: Path) -> Iterator[tuple[FastrouteProcess, FastrouteProcess]]:
    redis = RedisServer(free_port(), PASSWORD)
    conf = tmp_path / "shared.toml"
    conf.write_text(config(redis.port, "FR_TEST_REDIS_PASSWORD"))
    env = {"FR_TEST_REDIS_PASSWORD": PASSWORD}
    a = FastrouteProcess([str(conf)], env=env).start()
    b = FastrouteProcess([str(conf), "--workers", "2"], env=env, workers=2).start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()
        redis.stop()


def test_every_instance_sees_every_request(instances: tuple[FastrouteProcess, FastrouteProcess]) -> None:
    a, b = instances
    feed_a, feed_b = Feed(a.url), Feed(b.url)
    crossed_over(b, feed_a, a)  # the instances subscribe in the background
    ids = [chat(b, "from-b") for _ in range(4)] + [chat(a, "from-a") for _ in range(4)]
    for feed in (feed_a, feed_b):  # both instances' viewers see all of them, each once, in full
        feed.wait(lambda evs, f=feed: all(completes(f, i) >= 1 for i in ids), timeout=10)
        time.sleep(0.3)  # a duplicate would arrive by now
        assert [completes(feed, i) for i in ids] == [1] * len(ids)
        kinds = [e["type"] for e in feed.events if e.get("id") == ids[0]]
        assert kinds == ["start", "classified", "routed", "complete"]
    # a new viewer of A gets the history, B's requests included
    late = Feed(a.url)
    late.wait(lambda evs: all(completes(late, i) == 1 for i in ids))
    for proc in (a, b):
        assert PASSWORD not in proc.output
        assert "events: shared with other instances through redis://127.0.0.1:" in proc.output


def test_redis_down_then_back(tmp_path: Path) -> None:
    need_redis()
    port = free_port()
    conf = tmp_path / "later.toml"
    conf.write_text(config(port))
    a = FastrouteProcess([str(conf)]).start()
    redis = None
    b = None
    try:
        # Redis is not there: requests are served, the instance's own feed works, the log says why
        feed_a = Feed(a.url)
        alone = chat(a, "alone")
        feed_a.wait(lambda evs: completes(feed_a, alone) == 1)
        deadline = time.monotonic() + 10
        while f"cannot reach redis://127.0.0.1:{port}" not in a.output:
            assert time.monotonic() < deadline, a.output
            time.sleep(0.1)
        # Redis comes up: the instance connects by itself, and another instance's events reach it
        redis = RedisServer(port)
        b = FastrouteProcess([str(conf)]).start()
        crossed_over(b, feed_a, a, within_s=20)  # A reconnects by itself
        assert a.output.count("cannot reach") == 1  # said once, not at every retry
    finally:
        for proc in (b, a):
            if proc is not None:
                proc.stop()
        if redis is not None:
            redis.stop()


def test_an_unset_password_variable_refuses_to_start(tmp_path: Path) -> None:
    conf = tmp_path / "nopw.toml"
    conf.write_text(config(free_port(), "FR_TEST_REDIS_PASSWORD_UNSET"))
    out = subprocess.run([sys.executable, "-m", "fastroute", "serve", str(conf), "--port", str(free_port())],
                         capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2
    assert "events.redis_password_env: $FR_TEST_REDIS_PASSWORD_UNSET is not set" in out.stderr
    # check validates the file, and warns: the variable may be set only where it is served
    checked = subprocess.run([sys.executable, "-m", "fastroute", "check", str(conf)], capture_output=True, text=True,
                             timeout=60, cwd=ROOT, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert checked.returncode == 0 and f"{conf}: ok" in checked.stdout
    assert ("warning: events.redis_password_env: $FR_TEST_REDIS_PASSWORD_UNSET is not set; Redis would refuse "
            "the events (serve would refuse to start here)") in checked.stdout


@pytest.mark.parametrize(("events", "error"), [
    ({"redis_url": "http://127.0.0.1:6379"}, "events.redis_url: must be a redis://, rediss:// or unix:// URL"),
    ({"redis_url": "redis://user:secret@127.0.0.1:6379/0"}, "must not hold a password"),
    ({"channel": ""}, "events.channel: must not be empty"),
    ({"redis_uri": "redis://x"}, "events.redis_uri: unknown key (did you mean 'redis_url'?)"),
])
def test_events_config_errors(events: dict, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"events": events})
    assert error in str(info.value) and "secret" not in str(info.value)

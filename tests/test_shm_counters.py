"""The counters in a memory-mapped file (``ShmCounters``): MemoryCounters' answers for any sequence
of calls, shared by real processes (spawned, and forked), kept across a restart and a kill, the
lock freed by a process SIGKILLed while it held it, a file of another layout refused, a full file
counting new keys locally.  (The generic limiter tests run on it too: ``tests/test_limiter.py``.)"""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import signal
import struct
import tempfile
import threading
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastroute.governance.counters import MemoryCounters
from fastroute.governance.limiter import Limiter, Limits, Verdict, period_of
from fastroute.governance.shm_counters import (
    HEADER,
    HEADER_SIZE,
    LAYOUT_VERSION,
    MAGIC,
    SLOT_SIZE,
    ShmCounters,
    name_hash,
)
from fastroute.storage.base import StorageError

# spawned children import this module again: keep it light


def at(*parts: int) -> float:
    """UNIX seconds of a UTC time: at(2030, 1, 15, 12, 0, 15)."""
    return datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[misc]


def done(coro: Coroutine[Any, Any, Any]) -> Any:
    """The value of a coroutine that must finish without suspending (no loop needed)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise AssertionError("suspended")


def opened(path: Path, capacity: int | None = None) -> ShmCounters:
    counters = ShmCounters(path, capacity)
    done(counters.start())
    return counters


# ── the same answers as MemoryCounters ──────────────────────────────────────

#: 2030-03-31 is a Sunday: its last minutes end a minute, a day, a week and a month at once
BASE_MS = int(at(2030, 3, 31, 23, 57) * 1000)
NAMES = ("team-a", "team-b", "ünïcode ключ")
PERIOD_KINDS = ("day", "week", "month", "total")

_limit = st.one_of(st.just(-1), st.integers(0, 8))
_when = st.integers(0, 6 * 60_000)  # six minutes, in any order (a clock behind: out of order)
_take = st.tuples(st.just("take"), st.sampled_from(NAMES), _when, _limit, st.one_of(st.just(-1), st.integers(0, 60)),
                  st.one_of(st.just(-1), st.integers(0, 120)), st.sampled_from(PERIOD_KINDS), st.booleans())
_add = st.tuples(st.just("add"), st.sampled_from(NAMES), _when, st.integers(0, 25), st.integers(0, 40),
                 st.sampled_from(PERIOD_KINDS), st.booleans(), st.booleans())


@settings(derandomize=True, database=None, deadline=None, max_examples=300)
@given(capacity=st.sampled_from([1, 2, 3, 64]), ops=st.lists(st.one_of(_take, _add), max_size=80))
def test_the_same_answers_as_memory_for_any_sequence(capacity: int, ops: list[tuple[Any, ...]]) -> None:
    """Two instances on one file (two workers) answer as one MemoryCounters; with fewer slots than
    names (one instance: the names past the capacity are counted in the process), as well."""
    memory = MemoryCounters()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "limits.shm"
        # two workers; one when some names get no slot (the local fallback is each instance's own)
        workers = [opened(path, capacity) for _ in range(2 if capacity >= len(NAMES) else 1)]
        try:
            for op in ops:
                if op[0] == "take":
                    _, name, when, rpm, tpm, budget, kind, other = op
                    now_ms = BASE_MS + when
                    _, end_ms, period = period_of(kind, now_ms) if budget >= 0 else (0, 0, "")
                    args = (name, now_ms, rpm, tpm, budget, period, end_ms)
                    worker = workers[other % len(workers)]
                    assert done(worker.take(*args)) == done(memory.take(*args)), op
                else:
                    _, name, when, tokens, cost, kind, soon, other = op
                    now_ms = BASE_MS + when
                    _, end_ms, period = period_of(kind, now_ms)
                    args = (name, now_ms, tokens, cost, period, end_ms)
                    worker = workers[other % len(workers)]
                    if soon:
                        worker.add_soon(*args)
                        memory.add_soon(*args)
                    else:
                        done(worker.add(*args))
                        done(memory.add(*args))
            end = BASE_MS + 6 * 60_000
            for name in NAMES:  # what is left, by every kind of period
                for kind in PERIOD_KINDS:
                    _, end_ms, period = period_of(kind, end)
                    args = (name, end, 0, -1, 0, period, end_ms)
                    assert done(workers[-1].take(*args)) == done(memory.take(*args)), (name, kind)
            # every name was asked for (just above): those past the capacity are counted here
            assert workers[0].degraded == (capacity < len(NAMES))
            assert len(workers[0]) == min(capacity, len(NAMES))
        finally:
            for worker in workers:
                done(worker.close())


# ── processes ────────────────────────────────────────────────────────────────

RPM = 10_000
TRIES = 5_000
ADDS = 20_000
SHARED = Limits(requests_per_minute=RPM, tokens_per_minute=10**9, budget_usd=100.0, budget_period="day")
T_SHARED = at(2030, 1, 15, 12, 0, 1)


def _admit_in_child(path: str, barrier: Any, out: Any) -> None:
    try:
        counters = opened(Path(path))
        limiter = Limiter(counters)
        barrier.wait()
        passed = 0
        for _ in range(TRIES):
            if done(limiter.admit("shared", SHARED, T_SHARED)):
                passed += 1
                limiter.settle_soon("shared", SHARED, 3, 7, T_SHARED)
        barrier.wait()
        for _ in range(ADDS):  # adds alone, as fast as they come
            counters.add_soon("added", int(T_SHARED * 1000), 1, 0, "", 0)
        assert not counters.degraded
        done(counters.close())
        out.put(passed)
    except BaseException as exc:  # said to the parent at once, not by its timeout
        out.put(f"{type(exc).__name__}: {exc}")
        raise


def test_processes_admit_exactly_the_limit_between_them(tmp_path: Path) -> None:
    """Four processes try 20,000 requests at once, as fast as they can: exactly 10,000 pass, and each
    one's usage is counted; then 80,000 adds at once: all of them counted."""
    path = tmp_path / "limits.shm"
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    children = [ctx.Process(target=_admit_in_child, args=(str(path), barrier, out)) for _ in range(4)]
    for child in children:
        child.start()
    try:
        passed = [out.get(timeout=60) for _ in children]
    finally:
        for child in children:
            child.join(30)
            if child.is_alive():
                child.kill()
    assert [child.exitcode for child in children] == [0] * 4, passed
    assert sum(passed) == RPM, passed
    counters = opened(path)
    try:
        _, end_ms, period = period_of("day", int(T_SHARED * 1000))
        peeked = done(counters.take("shared", int(T_SHARED * 1000), 0, -1, 10**8, period, end_ms))
        assert peeked[2] == RPM and peeked[4] == 3 * RPM and peeked[5] == 7 * RPM, peeked
        assert done(counters.take("added", int(T_SHARED * 1000), 0, -1, -1, "", 0))[4] == 4 * ADDS
    finally:
        done(counters.close())


def _spend_then_wait(path: str, out: Any) -> None:
    """Spends a key's limits, then waits to be killed (no close: a crash)."""
    counters = opened(Path(path))
    limiter = Limiter(counters)
    limits = Limits(requests_per_minute=3, budget_usd=0.01, budget_period="day")
    verdicts = [bool(done(limiter.admit("k", limits, at(2030, 1, 15, 12, 0, 10)))) for _ in range(4)]
    limiter.settle_soon("k", limits, 0, 10_000, at(2030, 1, 15, 12, 0, 10))
    out.put(verdicts)
    time.sleep(600)


def test_a_restart_keeps_the_counts(tmp_path: Path) -> None:
    """A worker SIGKILLed after counting: a new one, in the same minute, refuses the key at its
    limit, and the day's spent budget stays spent; after a clean close too."""
    path = tmp_path / "limits.shm"
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_spend_then_wait, args=(str(path), out))
    child.start()
    try:
        assert out.get(timeout=60) == [True, True, True, False]
    finally:
        child.kill()
        child.join(30)
    assert child.exitcode == -signal.SIGKILL
    rpm = Limits(requests_per_minute=3)
    budget = Limits(budget_usd=0.01, budget_period="day")
    for second in (30, 50):  # the second time: after the clean close of the first
        counters = opened(path)
        limiter = Limiter(counters)
        now = at(2030, 1, 15, 12, 0, second)
        assert done(limiter.admit("k", rpm, now)) == Verdict(False, "requests_per_minute", 60 - second)
        assert done(limiter.admit("k", budget, now)) == Verdict(False, "budget_usd", 12 * 3600 - second)
        done(counters.close())
    counters = opened(path)
    limiter = Limiter(counters)
    assert not done(limiter.admit("k", budget, at(2030, 1, 15, 23, 59, 59)))
    assert done(limiter.admit("k", budget, at(2030, 1, 16)))  # the next day
    assert len(counters) == 1
    done(counters.close())


def _hold_the_lock(path: str, out: Any) -> None:
    counters = opened(Path(path))
    done(counters.take("k", int(at(2030, 1, 15) * 1000), 5, -1, -1, "", 0))  # its slot made
    fcntl.flock(counters._fd, fcntl.LOCK_EX)  # as in the middle of a take
    out.put("locked")
    time.sleep(600)


def test_a_process_killed_holding_the_lock_does_not_block_the_others(tmp_path: Path) -> None:
    path = tmp_path / "limits.shm"
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    counters = opened(path)  # before the child holds the lock (opening waits for it too)
    child = ctx.Process(target=_hold_the_lock, args=(str(path), out))
    child.start()
    answers: list[Any] = []
    try:
        assert out.get(timeout=60) == "locked"
        waiting = threading.Thread(target=lambda: answers.append(
            counters.take_now("k", int(at(2030, 1, 15) * 1000), 5, -1, -1, "", 0)), daemon=True)
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive() and not answers  # it waits for the child's lock: the same lock
        child.kill()  # SIGKILL
        waiting.join(30)
        assert not waiting.is_alive()
    finally:
        child.kill()
        child.join(30)
    assert answers == [(0, 0, 2, 0, 0, 0)]  # the child's request, then this one
    assert done(counters.take("k", int(at(2030, 1, 15) * 1000), 5, -1, -1, "", 0))[2] == 3
    done(counters.close())


def test_a_child_forked_after_start_has_a_lock_of_its_own(tmp_path: Path) -> None:
    """A descriptor inherited by fork would share the parent's lock (each would pass while the other
    holds it): the child opens the file again."""
    counters = opened(tmp_path / "limits.shm")
    fcntl.flock(counters._fd, fcntl.LOCK_EX)  # the parent in the middle of a take
    try:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                fcntl.flock(counters._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                code = 0
            os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        fcntl.flock(counters._fd, fcntl.LOCK_UN)
    assert os.waitstatus_to_exitcode(status) == 0, "the child passed the parent's lock"
    done(counters.close())


# ── the file ────────────────────────────────────────────────────────────────

def test_a_new_file_has_its_layout_and_a_slot_per_name(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "limits.shm"  # its directory is made
    counters = opened(path, capacity=4)
    # two names whose hashes start the probe at the same slot: each its own counts
    a, b = _same_home("x", 4)
    for name, n in ((a, 3), (b, 1), ("z", 2)):
        for _ in range(n):
            done(counters.take(name, int(at(2030, 1, 15) * 1000), 10, -1, -1, "", 0))
    assert len(counters) == 3
    done(counters.close())
    raw = path.read_bytes()
    assert len(raw) == HEADER_SIZE + 4 * SLOT_SIZE == 384
    assert HEADER.unpack_from(raw) == (MAGIC, LAYOUT_VERSION, SLOT_SIZE, 4, 3)
    again = opened(path)  # the file's own capacity
    assert again.capacity == 4
    assert [done(again.take(name, int(at(2030, 1, 15) * 1000), 0, -1, -1, "", 0))[2] for name in (a, b, "z")] == [
        3, 1, 2]
    done(again.close())


def test_a_slot_is_known_by_both_halves_of_the_name_hash(tmp_path: Path) -> None:
    """Another name whose hash starts alike (as 2**-64 of them would): a slot of its own."""
    path = tmp_path / "limits.shm"
    h1, h2 = name_hash("k")
    home = HEADER_SIZE + (h1 % 4) * SLOT_SIZE
    counters = opened(path, capacity=4)
    done(counters.close())
    with path.open("r+b") as f:  # the other name's slot, counted 7 requests at the same minute
        f.seek(home)
        f.write(struct.pack("=10q", h1, h2 ^ 1, int(at(2030, 1, 15)) // 60, 7, 0, 0, 0, 0, 0, 0))
        f.seek(24)
        f.write(struct.pack("=q", 1))
    counters = opened(path)
    assert done(counters.take("k", int(at(2030, 1, 15) * 1000), 10, -1, -1, "", 0))[2] == 1
    assert len(counters) == 2
    done(counters.close())


def _same_home(prefix: str, capacity: int) -> tuple[str, str]:
    seen: dict[int, str] = {}
    for i in range(1000):
        name = f"{prefix}-{i}"
        home = name_hash(name)[0] % capacity
        if home in seen:
            return seen[home], name
        seen[home] = name
    raise AssertionError("no two names share a slot")


def _header(version: int = LAYOUT_VERSION, slot: int = SLOT_SIZE, capacity: int = 4, used: int = 0) -> bytes:
    return HEADER.pack(MAGIC, version, slot, capacity, used).ljust(HEADER_SIZE, b"\0")


@pytest.mark.parametrize(("content", "capacity", "says"), [
    (b"SQLite format 3\0" + bytes(200), None,
     "is not a fastroute limits file of layout version 1 (it starts with b'SQLite f'); stop every fastroute process"),
    (_header(version=2) + bytes(4 * SLOT_SIZE), None,
     "it has layout version 2 (slots of 80 bytes), written by a newer fastroute; run that one, or stop every"),
    (_header(slot=64) + bytes(4 * SLOT_SIZE), None,
     "it has layout version 1 (slots of 64 bytes), written by another fastroute"),
    (_header() + bytes(3 * SLOT_SIZE), None, "is damaged: 304 bytes, where its header says 4 slots of 80 bytes"),
    (_header(used=5) + bytes(4 * SLOT_SIZE), None, "is damaged"),
    (MAGIC, None, "is not a fastroute limits file"),
    (_header() + bytes(4 * SLOT_SIZE), 8, "holds 4 key names, not the 8 asked for; to resize it, stop every"),
])
def test_a_file_of_another_layout_is_refused_clearly(tmp_path: Path, content: bytes, capacity: int | None,
                                                     says: str) -> None:
    path = tmp_path / "limits.shm"
    path.write_bytes(content)
    counters = ShmCounters(path, capacity)
    with pytest.raises(StorageError) as caught:
        done(counters.start())
    assert str(caught.value).startswith(f"limits: {path} ")
    assert says in str(caught.value)
    assert "the rate-limit and budget counts in it are lost" in str(caught.value)
    assert path.read_bytes() == content  # untouched
    with pytest.raises(StorageError, match="is not started"):
        done(counters.take("k", 0, 1, -1, -1, "", 0))


@pytest.mark.parametrize("content", [b"", bytes(1000)])
def test_a_file_of_zeros_is_laid_out(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "limits.shm"
    path.write_bytes(content)  # as a start that died laying it out leaves it
    counters = opened(path)
    assert counters.capacity == 65_536 and path.stat().st_size == HEADER_SIZE + 65_536 * SLOT_SIZE
    assert path.stat().st_blocks * 512 >= path.stat().st_size  # allocated, not a sparse file
    done(counters.close())


def test_a_full_file_counts_new_keys_in_this_process(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="fastroute.governance")
    path = tmp_path / "limits.shm"
    rpm = Limits(requests_per_minute=2)
    t = at(2030, 1, 15, 12)
    one, two = opened(path, capacity=2), opened(path, capacity=2)
    try:
        first, second = Limiter(one), Limiter(two)
        assert [bool(done(first.admit(name, rpm, t))) for name in ("a", "b")] == [True, True]
        assert not one.degraded
        # no room for c and d: counted in each process, which says so once
        assert [bool(done(first.admit("c", rpm, t))) for _ in range(3)] == [True, True, False]
        assert [bool(done(first.admit("d", rpm, t))) for _ in range(3)] == [True, True, False]
        first.settle_soon("d", Limits(tokens_per_minute=10), 10, 0, t)
        assert not done(first.admit("d", Limits(tokens_per_minute=10), t))
        assert one.degraded and not two.degraded and len(one) == 2
        assert [bool(done(second.admit("c", rpm, t))) for _ in range(3)] == [True, True, False]  # its own
        assert [bool(done(second.admit("a", rpm, t))) for _ in range(2)] == [True, False]  # shared
        assert two.degraded
    finally:
        done(one.close())
        done(two.close())
    full = [r for r in caplog.records if "is full" in r.getMessage()]
    said = (f"limits: {path} is full (2 key names); key 'c' and any other new key are counted in this process only "
            "(each process on its own, lost at exit); to make room, stop every fastroute process, remove the file "
            "and start with a bigger capacity")
    assert [r.getMessage() for r in full] == [said] * 2  # once by each


def test_a_wrong_use_is_said_on_the_spot(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ValueError, match="capacity must be from 1"):
        ShmCounters(tmp_path / "limits.shm", 0)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(StorageError, match=f"limits: cannot open {tmp_path / 'a-file' / 'limits.shm'}: "):
        done(ShmCounters(tmp_path / "a-file" / "limits.shm").start())
    counters = opened(tmp_path / "limits.shm", 2)
    assert counters.where == str(tmp_path / "limits.shm") and repr(counters) == f"<ShmCounters {counters.where}>"
    done(counters.close())
    with pytest.raises(StorageError, match="is not started"):
        done(counters.add("k", 0, 1, 1, "total", 0))
    counters.add_soon("k", 0, 1, 1, "total", 0)  # never raises on the request path: it says so
    assert f"limits: counting the usage of key 'k' in {counters.where} failed" in caplog.text

"""Counters in a memory-mapped file shared by every process of one machine: :class:`ShmCounters`.

The same answers as :class:`~fastroute.governance.counters.MemoryCounters` for the same calls,
but one set of counts for all the processes that open the same path (``fastroute serve
--workers N``), kept across restarts (the file is the state), and with no thread: every
operation is a few reads and writes of the mapping under an exclusive ``flock`` of the file,
done before the coroutine returns (``take`` and ``add`` never suspend; ``add_soon`` makes no
task; ``drained`` has nothing to wait for).

The file (``limits.shm`` beside the state) has a fixed size: a header, then ``capacity``
slots of an open-addressing hash table (linear probing from the name's hash modulo the
capacity).  In the machine's byte order (the file belongs to one machine); the slots are
signed 64-bit words, read and written in place::

    header (64 bytes)  magic b"FRLIMSHM", layout version (u32), slot size (u32),
                       capacity (i64), slots in use (i64), zeros
    slot   (80 bytes)  the key name's blake2b-128 (two words; 0, 0: an empty slot),
                       minute, its requests, its tokens,
                       the previous minute's requests, its tokens,
                       the budget period (blake2b-64 of its id; 0 for none yet), its end ms,
                       its spent micro-dollars

A slot's name hash is written once, when a key is first counted, and never changes: a key
keeps its slot for the life of the file, and the same name finds it again (in any process,
after any restart), so there is nothing to purge.  The bound is ``capacity`` key names (65,536
by default: 5.2 MB, allocated when the file is made) for the life of the file.  Past it, a new
key name is counted in this process only (as ``MemoryCounters`` would: each process on its
own, lost at exit), the log says so once, and :attr:`ShmCounters.degraded` is True; the keys
that have a slot go on being shared.  To make room: stop every process, remove the file (the
counts go with it) and start with a bigger ``capacity``.

Locking: ``flock(LOCK_EX)`` on the file around each read-check-increment and each add (two
system calls; inside, a few reads and writes of the mapping and :func:`exceeds`, no I/O).  One instance is used by one thread (the worker's loop), as the other kinds; two
instances in one process exclude each other like two processes.  A process killed while it
holds the lock loses it with its last descriptor: the kernel releases it and the others go on.
A process *stopped* (SIGSTOP, a debugger) inside those few microseconds holds it until it goes
on or dies, and the others wait for it meanwhile.  A process forked after
:meth:`~ShmCounters.start` opens the file again in the child, so that parent and child exclude
each other (a descriptor inherited by fork shares its lock).

What survives: every change is in the file's pages at once (a ``MAP_SHARED`` mapping), so a
process that exits or is killed loses nothing; a crash of the machine itself may lose what the
kernel had not yet written back (``close()`` writes it).  Put the file on a local file system.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import struct
import weakref
from pathlib import Path

from fastroute.governance.counters import WINDOW_MS, Counters, Counts, exceeds
from fastroute.storage.base import StorageError

__all__ = ["ShmCounters"]

log = logging.getLogger("fastroute.governance")

MAGIC = b"FRLIMSHM"
LAYOUT_VERSION = 1
#: key names a new file holds
DEFAULT_CAPACITY = 65_536

#: magic, layout version, slot size, capacity, slots in use
HEADER = struct.Struct("=8sIIqq")
HEADER_SIZE = 64
#: the word of the header that counts the slots in use
USED = 3
#: a slot: the name's hash (2 words), then its counts (:data:`MINUTE` ... :data:`SPENT`, from the third word)
SLOT_WORDS = 10
SLOT_SIZE = SLOT_WORDS * 8
NAME = struct.Struct("=qq")
#: the counts' words, from a slot's third: minute, requests, tokens, previous minute's requests and tokens,
#: period, its end ms, spent micro-dollars
MINUTE, REQUESTS, TOKENS, PREV_REQUESTS, PREV_TOKENS, PERIOD, PERIOD_END, SPENT = range(8)
COUNTS_WORDS = 8
#: period ids hashed and kept, at most (a few a day are ever used)
PERIODS_KEPT = 256


def name_hash(name: str) -> tuple[int, int]:
    """The two words a key name's slot starts with (never 0, 0: that is an empty slot)."""
    h1, h2 = NAME.unpack(hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=16).digest())
    return (h1, h2) if h1 or h2 else (1, 0)


def period_hash(period: str) -> int:
    """A budget period's id as a word; 0 for ``""`` (no period yet), never 0 for another."""
    if not period:
        return 0
    return int.from_bytes(hashlib.blake2b(period.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                          "little", signed=True) or 1


def take_at(v: memoryview, b: int, now_ms: int, rpm: int, tpm: int, budget: int, period: int,
            period_end_ms: int) -> Counts:
    """``MemoryCounters.take`` on one key's counts, the words ``v[b:b + 8]``, in place."""
    now_minute, elapsed = divmod(now_ms, WINDOW_MS)
    minute, requests, tokens, prev_requests, prev_tokens, current, end_ms, spent = v[b:b + COUNTS_WORDS].tolist()
    if now_minute > minute:  # a time before the key's minute (clocks, out of order) counts in its minute
        if now_minute == minute + 1:
            prev_requests, prev_tokens = requests, tokens
        else:
            prev_requests = prev_tokens = 0
        requests = tokens = 0
        v[b + MINUTE] = now_minute
        v[b + REQUESTS] = v[b + TOKENS] = 0
        v[b + PREV_REQUESTS] = prev_requests
        v[b + PREV_TOKENS] = prev_tokens
    if budget >= 0 and period != current and not (period_end_ms and end_ms and period_end_ms < end_ms):
        spent = 0  # a new period (an older one, by a clock behind: the current one's spend counts)
        v[b + PERIOD] = period
        v[b + PERIOD_END] = period_end_ms
        v[b + SPENT] = 0
    refused = exceeds(elapsed, rpm, tpm, budget, prev_requests, requests, prev_tokens, tokens, spent)
    if not refused:
        requests += 1
        v[b + REQUESTS] = requests
    return refused, prev_requests, requests, prev_tokens, tokens, spent


def add_at(v: memoryview, b: int, now_ms: int, tokens: int, cost_micros: int, period: int,
           period_end_ms: int) -> None:
    """``MemoryCounters.add`` on one key's counts, the words ``v[b:b + 8]``, in place."""
    if tokens:
        now_minute = now_ms // WINDOW_MS
        minute = v[b + MINUTE]
        if now_minute > minute:
            if now_minute == minute + 1:
                v[b + PREV_REQUESTS] = v[b + REQUESTS]
                v[b + PREV_TOKENS] = v[b + TOKENS]
            else:
                v[b + PREV_REQUESTS] = v[b + PREV_TOKENS] = 0
            v[b + REQUESTS] = v[b + TOKENS] = 0
            v[b + MINUTE] = minute = now_minute
        if now_minute >= minute:
            v[b + TOKENS] += tokens
        elif now_minute == minute - 1:
            v[b + PREV_TOKENS] += tokens
    if cost_micros:
        if period == v[b + PERIOD]:
            v[b + SPENT] += cost_micros
            return
        end_ms = v[b + PERIOD_END]
        if period_end_ms and end_ms and period_end_ms < end_ms:
            return  # an older period (a clock behind): it ended, nothing reads it
        v[b + PERIOD] = period
        v[b + PERIOD_END] = period_end_ms
        v[b + SPENT] = cost_micros


class ShmCounters(Counters):
    """Counts in one memory-mapped file, exact across the processes of one machine that open it.

    ``capacity``: the key names a new file holds (default 65,536); an existing file keeps its
    own, and asking for another is refused (remove the file to resize it)."""

    def __init__(self, path: str | os.PathLike[str], capacity: int | None = None) -> None:
        super().__init__()
        if capacity is not None and not 1 <= capacity <= 2**31:
            raise ValueError(f"limits: capacity must be from 1 to {2**31} key names, got {capacity}")
        self.path = Path(os.path.abspath(os.path.expanduser(path)))
        self.where = str(self.path)
        self.asked_capacity = capacity
        #: the file's, once started
        self.capacity = 0
        self._fd = -1
        self._map: mmap.mmap | None = None
        #: the file as signed 64-bit words
        self._words: memoryview | None = None
        #: name -> the word its counts start at, or -1: counted in :attr:`_overflow` (the file was full)
        self._slots: dict[str, int] = {}
        self._periods: dict[str, int] = {}
        #: the counts of the names the file had no room for (this process's own), each 8 words
        self._overflow: dict[str, memoryview] = {}
        self._said_full = False

    # ── opening ─────────────────────────────────────────────────────────────

    async def start(self) -> None:
        if self._map is not None:
            return
        self._open()
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _reopen_after_fork(ref))

    def _open(self) -> None:
        where = self.where
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StorageError(f"limits: cannot open {where}: {exc}") from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # one process lays a new file out; the others wait for it
                try:
                    capacity = self._prepare(fd)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                mapped = mmap.mmap(fd, HEADER_SIZE + capacity * SLOT_SIZE, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE)
            except OSError as exc:
                raise StorageError(f"limits: cannot use {where}: {exc}") from exc
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._map = mapped
        self._words = memoryview(mapped).cast("q")
        self.capacity = capacity

    def _prepare(self, fd: int) -> int:
        """The file's capacity: a new (empty) file is laid out; another one is checked."""
        size = os.fstat(fd).st_size
        head = os.pread(fd, HEADER.size, 0)
        if size == 0 or (not any(head) and _zeros(fd, size)):  # new, or a start died laying it out
            capacity = DEFAULT_CAPACITY if self.asked_capacity is None else self.asked_capacity
            os.ftruncate(fd, 0)
            # zeros (every slot empty) on blocks of its own (a write to a hole of a full disk is a SIGBUS),
            # then the header: a file is all zeros until it is complete
            os.posix_fallocate(fd, 0, HEADER_SIZE + capacity * SLOT_SIZE)
            os.pwrite(fd, HEADER.pack(MAGIC, LAYOUT_VERSION, SLOT_SIZE, capacity, 0), 0)
            return capacity
        what = f"limits: {self.where} is not a fastroute limits file of layout version {LAYOUT_VERSION}"
        remedy = "stop every fastroute process, then remove it (the rate-limit and budget counts in it are lost)"
        if len(head) < HEADER.size or head[:8] != MAGIC:
            raise StorageError(f"{what} (it starts with {head[:8]!r}); {remedy}, or give the limits another path")
        _, version, slot_size, capacity, used = HEADER.unpack(head)
        if version != LAYOUT_VERSION or slot_size != SLOT_SIZE:
            raise StorageError(f"{what}: it has layout version {version} (slots of {slot_size} bytes), written by "
                               f"{'a newer' if version > LAYOUT_VERSION else 'another'} fastroute; run that one, "
                               f"or {remedy}")
        if not 0 < capacity <= 2**31 or size != HEADER_SIZE + capacity * SLOT_SIZE or not 0 <= used <= capacity:
            raise StorageError(f"limits: {self.where} is damaged: {size} bytes, where its header says {capacity} "
                               f"slots of {SLOT_SIZE} bytes, {used} in use; {remedy}")
        if self.asked_capacity is not None and capacity != self.asked_capacity:
            raise StorageError(f"limits: {self.where} holds {capacity} key names, not the {self.asked_capacity} "
                               f"asked for; to resize it, {remedy}")
        return capacity

    def _reopen(self) -> None:
        """In a child forked after start: a descriptor of its own, so that its lock excludes the parent's."""
        if self._fd < 0:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            log.error("limits: cannot open %s again after fork (%s); this process no longer counts in it",
                      self.where, exc)
            self._close_now()
            return
        os.close(self._fd)
        self._fd = fd

    async def close(self) -> None:
        self._close_now()

    def _close_now(self) -> None:
        if self._words is not None:
            self._words.release()
            self._words = None
        if self._map is not None:
            try:
                self._map.flush()
            except OSError as exc:
                log.warning("limits: could not write %s back to disk (%s)", self.where, exc)
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._slots.clear()
        self._overflow.clear()  # this process's own counts: lost, as at exit

    # ── the state ───────────────────────────────────────────────────────────

    @property
    def degraded(self) -> bool:
        """True once a key name found no room in the file and is counted in this process only."""
        return bool(self._overflow)

    def __len__(self) -> int:
        """The key names the file holds (of :attr:`capacity`)."""
        return self._ready()[USED]

    def _ready(self) -> memoryview:
        if self._words is None:
            raise StorageError(f"limits: {self.where} is not started (or closed)")
        return self._words

    def _slot(self, name: str) -> int:
        """The word ``name``'s counts start at (its slot made if it has none); -1: the file is full."""
        v = self._ready()
        h1, h2 = name_hash(name)
        capacity = self.capacity
        found = -1
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            used = v[USED]
            if used < capacity:  # there is an empty slot: the probe ends at the name's or at that one
                i = h1 % capacity
                while True:
                    s = HEADER_SIZE // 8 + i * SLOT_WORDS
                    s1, s2 = v[s], v[s + 1]
                    if s1 == h1 and s2 == h2:
                        found = s + 2
                        break
                    if not s1 and not s2:
                        v[s] = h1
                        v[s + 1] = h2
                        v[USED] = used + 1
                        found = s + 2
                        break
                    i = i + 1 if i + 1 < capacity else 0
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        if found < 0:  # full: no slot changes its name any more, so the search needs no lock
            assert self._map is not None
            found = _find(self._map, NAME.pack(h1, h2))
        if found < 0:
            self._overflow[name] = memoryview(bytearray(COUNTS_WORDS * 8)).cast("q")
            if not self._said_full:
                self._said_full = True
                log.error("limits: %s is full (%d key names); key %r and any other new key are counted in this "
                          "process only (each process on its own, lost at exit); to make room, stop every "
                          "fastroute process, remove the file and start with a bigger capacity",
                          self.where, capacity, name)
        self._slots[name] = found
        return found

    def _period(self, period: str) -> int:
        known = self._periods.get(period)
        if known is None:
            if len(self._periods) >= PERIODS_KEPT:
                self._periods.clear()
            known = self._periods[period] = period_hash(period)
        return known

    # ── the operations ──────────────────────────────────────────────────────

    async def take(self, name: str, now_ms: int, rpm: int, tpm: int, budget: int,
                   period: str, period_end_ms: int) -> Counts:
        return self.take_now(name, now_ms, rpm, tpm, budget, period, period_end_ms)

    def take_now(self, name: str, now_ms: int, rpm: int, tpm: int, budget: int,
                 period: str, period_end_ms: int) -> Counts:
        """:meth:`take`, as a plain call."""
        b = self._slots.get(name)
        if b is None:
            b = self._slot(name)
        p = self._period(period) if budget >= 0 else 0
        if b < 0:
            return take_at(self._overflow[name], 0, now_ms, rpm, tpm, budget, p, period_end_ms)
        v = self._ready()
        fd = self._fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            return take_at(v, b, now_ms, rpm, tpm, budget, p, period_end_ms)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    async def add(self, name: str, now_ms: int, tokens: int, cost_micros: int,
                  period: str, period_end_ms: int) -> None:
        self.add_now(name, now_ms, tokens, cost_micros, period, period_end_ms)

    def add_now(self, name: str, now_ms: int, tokens: int, cost_micros: int, period: str,
                period_end_ms: int) -> None:
        """:meth:`add`, as a plain call."""
        if not tokens and not cost_micros:
            return
        b = self._slots.get(name)
        if b is None:
            b = self._slot(name)
        p = self._period(period) if cost_micros else 0
        if b < 0:
            add_at(self._overflow[name], 0, now_ms, tokens, cost_micros, p, period_end_ms)
            return
        v = self._ready()
        fd = self._fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            add_at(v, b, now_ms, tokens, cost_micros, p, period_end_ms)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def add_soon(self, name: str, now_ms: int, tokens: int, cost_micros: int, period: str,
                 period_end_ms: int) -> None:
        """Counted at once (no task); never raises: a failure is logged, and that usage is not counted."""
        try:
            self.add_now(name, now_ms, tokens, cost_micros, period, period_end_ms)
        except Exception:
            log.exception("limits: counting the usage of key %r in %s failed", name, self.where)


def _zeros(fd: int, size: int) -> bool:
    """Whether the file holds nothing but zeros."""
    at = 0
    while at < size:
        chunk = os.pread(fd, 1 << 20, at)
        if not chunk:
            return True
        if chunk.count(0) != len(chunk):
            return False
        at += len(chunk)
    return True


def _find(mm: mmap.mmap, key: bytes) -> int:
    """The word the counts of the slot named ``key`` start at; -1: none (a search of the whole file)."""
    at = mm.find(key, HEADER_SIZE)
    while at >= 0:
        if (at - HEADER_SIZE) % SLOT_SIZE == 0:
            return at // 8 + 2
        at = mm.find(key, at + 1)
    return -1


def _reopen_after_fork(ref: weakref.ref[ShmCounters]) -> None:
    counters = ref()
    if counters is not None:
        counters._reopen()

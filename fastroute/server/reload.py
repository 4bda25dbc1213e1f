"""Reloading the config without a restart: ``SIGHUP`` to the main process, ``POST /v1/admin/reload``
(admin token), ``fastroute reload``.

A reload:

1. reads the file again and validates it completely, as startup does (:func:`check_file`: the same
   :func:`prepare`, :func:`~fastroute.config.require_env`).  A mistake leaves the running config in
   place; the error names the key path, in the answer and in the log;
2. keeps what is bound at process start (:data:`RESTART_BOUND`: the listening socket, the workers,
   Granian's buffers, the state stores, the request log, the event relay, the admin token...) as it
   runs, and says so: "kept until a restart: server.port (8090 -> 9000)";
3. publishes the validated config to every worker (:class:`Board`: the config written atomically
   into the server's shared directory, then an 8-byte generation counter bumped, which each worker
   compares every :data:`WATCH_S`);
4. in each worker, builds the next :class:`~fastroute.server.generation.Generation` and swaps it in
   (:class:`Reloader`).  Requests under way finish on the generation they started with.

The admin API's answer waits (up to :data:`WAIT_S`) until every worker serves the new generation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import logging
import mmap
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from fastroute.config import Config, config_from_dict, drop_unusable_providers, read_toml, require_env
from fastroute.errors import BadRequest, ConfigError, Conflict, RequestError

if TYPE_CHECKING:
    from fastroute.server.generation import Generation, Lasting

log = logging.getLogger("fastroute.reload")

#: what takes a restart to change: (section, keys; None: the whole section)
RESTART_BOUND: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    ("server", ("host", "port", "workers", "max_header_bytes", "shutdown_grace_s")),  # Granian's, at its start
    ("storage", None),     # the key store, the counters, the Responses state are open on it
    ("audit", ("enabled", "path", "retention_days")),  # the audit log is open
    ("admin", None),       # the admin token is read once, and the key store opened for it
    ("logging", None),     # the request log is open
    ("events", None),      # the event relay is connected
    ("responses", None),   # the Responses state is open
    ("telemetry", None),   # exporters start with the process
    ("cache", None),       # the cache's store is open, its bounds set
)
#: how often a worker compares the published generation with its own (seconds)
WATCH_S = 0.1
#: how long the admin API's answer waits for every worker to serve a new generation
WAIT_S = 10.0
#: the environment variable naming the server's reload directory (set by the runner)
ENV_RELOAD = "FASTROUTE_RELOAD_DIR"
EMBEDDED = "<embedded default>"


# ── reading and validating ──────────────────────────────────────────────────

@dataclass(frozen=True, slots=True)
class Origin:
    """Where a server's config came from, so it can be read again."""

    #: the file, absolute; None: the embedded default (nothing to reload)
    path: str | None
    #: the config's name in messages (as it was named at startup)
    source: str = EMBEDDED
    #: ``[server]`` values the command line set (``--host``, ``--port``, ``--workers``, ``--access-log``)
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Prepared:
    config: Config
    #: the config with ``strict`` providers whose key is unset dropped: what is served
    usable: Config
    warnings: list[str]
    router: Any


@dataclass(frozen=True, slots=True)
class Checked:
    """A config read again and validated: what a reload swaps in."""

    #: the raw config to serve: the file's, with what takes a restart as it runs
    raw: dict[str, Any]
    usable: Config
    warnings: list[str]
    #: "server.port (8090 -> 9000)": in the file, not applied until a restart
    restart_needed: list[str]


def prepare(raw: dict[str, Any], source: str) -> Prepared:
    """Validate everything a worker will build (providers, routing, plugins, classifiers), so a bad
    config fails here, once: at startup (``fastroute serve``, ``check``) and at each reload."""
    from fastroute.plugins import PluginSet
    from fastroute.providers import build_providers
    from fastroute.routing import Router
    from fastroute.routing.classifiers import build_classifiers
    from fastroute.telemetry import require_packages

    config = config_from_dict(raw, source)
    usable, warnings = drop_unusable_providers(config)
    router = Router(usable, build_providers(usable, None))
    PluginSet(usable)
    build_classifiers(usable)
    require_packages(usable)
    return Prepared(config, usable, warnings, router)


def with_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The raw config with the command line's ``[server]`` values over the file's."""
    server = raw.get("server", {})
    if not overrides or not isinstance(server, dict):  # not a table: the validation says so
        return raw
    return {**raw, "server": {**server, **overrides}}


def check_file(origin: Origin, running_raw: dict[str, Any]) -> Checked:
    """Read ``origin``'s file again and validate it as startup would; a ConfigError names the key path."""
    if origin.path is None:
        raise ConfigError(origin.source, "", "this server was started without a config file (the embedded "
                                             "default): there is nothing to reload; start it with a file")
    source = origin.source
    raw = with_overrides(read_toml(origin.path), origin.overrides)
    fresh = prepare(raw, source)
    require_env(fresh.config)
    running = config_from_dict(running_raw, source)
    changed = bound_changes(running, fresh.config)
    if not changed:
        return Checked(raw, fresh.usable, fresh.warnings, [])
    raw = _keep_running(raw, running_raw, [path for path, _, _ in changed])
    usable, warnings = drop_unusable_providers(config_from_dict(raw, source))
    return Checked(raw, usable, warnings, [f"{path} ({_shown(old)} -> {_shown(new)})" for path, old, new in changed])


def bound_changes(running: Config, new: Config) -> list[tuple[str, Any, Any]]:
    """(key path, running value, file's value) of each :data:`RESTART_BOUND` value the file changes."""
    out = []
    for section, keys in RESTART_BOUND:
        old_part, new_part = getattr(running, section), getattr(new, section)
        for key in keys if keys is not None else [f.name for f in dataclasses.fields(old_part)]:
            old, now = getattr(old_part, key), getattr(new_part, key)
            if old != now:
                out.append((f"{section}.{key}", old, now))
    return out


def _keep_running(raw: dict[str, Any], running_raw: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """``raw`` with each ``section.key`` of ``paths`` as ``running_raw`` has it (or left out, as it was)."""
    out = dict(raw)
    for path in paths:
        section, _, key = path.partition(".")
        part = dict(out.get(section) or {})
        before = running_raw.get(section) or {}
        if key in before:
            part[key] = before[key]
        else:
            part.pop(key, None)
        out[section] = part
    return out


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def summary(config: Config) -> str:
    """What a generation holds, for the log and the answer: counts and names, never a secret."""
    return (f"{len(config.providers)} provider(s), {len(config.routers)} routing rule(s), {len(config.keys)} "
            f"configured key(s)")


@dataclass(frozen=True, slots=True)
class Reloading:
    """What a worker needs to reload: where its config came from, the server's board, the raw
    config it starts with and its generation number (above 0 in a worker started after a reload)."""

    origin: Origin
    board: Board | None
    raw: dict[str, Any]
    number: int = 0


# ── telling the workers ─────────────────────────────────────────────────────

@dataclass(frozen=True, slots=True)
class Published:
    generation: int
    source: str
    raw: dict[str, Any]


class Board:
    """A server's published config, in its shared directory, seen by the main process and every worker:

    - ``config.json``: the last validated config (generation, source, raw), replaced atomically;
    - ``generation``: eight bytes every process maps, bumped after ``config.json`` is in place; a
      worker compares them with what it last saw (:meth:`changed`);
    - ``serving/<pid>``: the generation each worker serves (the admin API's answer waits for them);
    - ``lock``: one publisher at a time (the main process on ``SIGHUP``, any worker on the API).
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        os.makedirs(os.path.join(folder, "serving"), exist_ok=True)
        fd = os.open(os.path.join(folder, "generation"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < 8:
                os.ftruncate(fd, 8)
            self._mm = mmap.mmap(fd, 8)
        finally:
            os.close(fd)
        self._seen = self._mm[:8]

    def changed(self) -> bool:
        """Has a generation been published since :meth:`read` last looked?  Eight bytes compared."""
        return self._mm[:8] != self._seen

    def read(self) -> Published | None:
        """The last published config; None before the first reload."""
        self._seen = self._mm[:8]
        try:
            with open(os.path.join(self.folder, "config.json"), "rb") as f:
                data = orjson.loads(f.read())
        except FileNotFoundError:
            return None
        return Published(data["generation"], data["source"], data["raw"])

    def publish(self, raw: dict[str, Any], source: str) -> int:
        """Publish a validated config to every worker; its generation number."""
        with open(os.path.join(self.folder, "lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            number = int.from_bytes(self._mm[:8], "little") + 1
            self._write("config.json", orjson.dumps({"generation": number, "source": source, "raw": raw}))
            self._mm[:8] = number.to_bytes(8, "little")
        return number

    def note_serving(self, number: int) -> None:
        self._write(os.path.join("serving", str(os.getpid())), str(number).encode())

    def forget(self) -> None:
        try:
            os.unlink(os.path.join(self.folder, "serving", str(os.getpid())))
        except OSError:
            pass

    def serving(self) -> dict[int, int]:
        """pid -> generation served, for each worker alive."""
        out = {}
        folder = os.path.join(self.folder, "serving")
        for name in os.listdir(folder):
            try:
                pid = int(name)
                os.kill(pid, 0)
                with open(os.path.join(folder, name), "rb") as f:
                    out[pid] = int(f.read())
            except (ValueError, OSError):
                continue  # a worker gone, or a file being replaced
        return out

    def _write(self, name: str, data: bytes) -> None:
        path = os.path.join(self.folder, name)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)


def reload_in_main(origin: Origin, board: Board, startup_raw: dict[str, Any]) -> int | None:
    """``SIGHUP``: validate in the main process, publish to the workers; a mistake is logged, nothing changes."""
    make_logger_heard()
    published = board.read()
    running_raw = published.raw if published is not None else startup_raw
    try:
        checked = check_file(origin, running_raw)
    except ConfigError as exc:
        log.error("reload (SIGHUP) refused, the running config stays: %s", exc)
        return None
    number = board.publish(checked.raw, origin.source)
    log.info("reload (SIGHUP): generation %d published to the workers: %s%s", number, summary(checked.usable),
             _kept_line(checked))
    return number


def _kept_line(checked: Checked) -> str:
    line = "".join(f"; warning: {w}" for w in checked.warnings)
    if checked.restart_needed:
        line += "; kept until a restart: " + ", ".join(checked.restart_needed)
    return line


def make_logger_heard() -> None:
    """Reload lines reach stderr (INFO included) unless the embedding program set up logging itself."""
    if not log.hasHandlers():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("fastroute: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


# ── the swap, in a worker ───────────────────────────────────────────────────

class Reloader:
    """A worker's reloads: watches the :class:`Board`, builds the next generation, swaps it in."""

    def __init__(self, handlers: Any, lasting: Lasting, current: Generation, raw: dict[str, Any],
                 origin: Origin, board: Board | None) -> None:
        self.handlers = handlers
        self.lasting = lasting
        self.current = current
        #: the raw config being served (what a reload compares the file with)
        self.raw = raw
        self.origin = origin
        self.board = board
        #: called with each generation swapped in
        self.on_swap: list[Callable[[Generation], None]] = []
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._retired: list[Generation] = []
        #: counters a reload opened (a key with limits where none had any): closed at the stop
        self.opened: list[Any] = []
        make_logger_heard()

    async def start(self) -> None:
        if self.board is not None:
            self.board.note_serving(self.current.number)
            self._watch = asyncio.create_task(self._watching())

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        if self.board is not None:
            self.board.forget()
        for task in self._retiring:
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)

    def generations(self) -> list[Generation]:
        """The generation serving, and those retired whose requests may still run (for the stop)."""
        return [self.current, *self._retired]

    async def _watching(self) -> None:
        assert self.board is not None
        while True:
            await asyncio.sleep(WATCH_S)
            if self.board.changed():
                try:
                    await self._take_published()
                except Exception:  # a bug: the running generation stays, the watch goes on
                    log.exception("reload: worker %d could not build the published config; it keeps "
                                  "generation %d", os.getpid(), self.current.number)

    async def _take_published(self) -> None:
        assert self.board is not None
        published = self.board.read()
        if published is not None and published.generation > self.current.number:
            config = config_from_dict(published.raw, published.source)
            await self._swap(drop_unusable_providers(config)[0], published.raw, published.generation)

    async def reload(self) -> dict[str, Any]:
        """``POST /v1/admin/reload``: read, validate, publish, swap here; wait for the other workers."""
        origin = self.origin
        if origin.path is None:
            raise Conflict("this server was started without a config file (the embedded default): there is "
                           "nothing to reload; start it with a file", code="nothing_to_reload")
        try:
            checked = await asyncio.to_thread(check_file, origin, self.raw)
        except ConfigError as exc:
            log.error("reload refused, the running config stays: %s", exc)
            raise BadRequest(str(exc), param=exc.path or None, code="invalid_config") from None
        if self.board is not None:
            number = await asyncio.to_thread(self.board.publish, checked.raw, origin.source)
        else:
            number = self.current.number + 1
        try:
            await self._swap(checked.usable, checked.raw, number)
        except Exception as exc:
            log.exception("reload: worker %d could not build generation %d", os.getpid(), number)
            raise RequestError(f"the config is valid, but this worker could not build it: "
                               f"{type(exc).__name__}: {exc}") from None
        workers = checked.usable.server.workers
        serving = await self._wait_for(number, workers)
        answer = {"reloaded": True, "generation": number, "restart_needed": checked.restart_needed,
                  "warnings": checked.warnings, "providers": len(checked.usable.providers),
                  "rules": len(checked.usable.routers), "workers": {"serving": serving, "of": workers}}
        log.info("reload (admin API): generation %d published: %s%s", number, summary(checked.usable),
                 _kept_line(checked))
        return answer

    async def _wait_for(self, number: int, workers: int) -> int:
        """How many workers serve generation ``number`` (or later), waiting up to WAIT_S for all."""
        if self.board is None:
            return 1
        deadline = time.monotonic() + WAIT_S
        while True:
            serving = sum(n >= number for n in self.board.serving().values())
            if serving >= workers or time.monotonic() >= deadline:
                return serving
            await asyncio.sleep(0.05)

    async def _swap(self, config: Config, raw: dict[str, Any], number: int) -> None:
        """Build generation ``number`` of ``config``, start it, then serve from it; the old one retires."""
        from fastroute.governance.keys import KeyRing
        from fastroute.server.app import secret_envs
        from fastroute.server.generation import build_generation

        async with self._lock:
            if number <= self.current.number:
                return  # the watch took it already (or a later one)
            lasting = self.lasting
            if lasting.limiter is None:
                await self._open_limiter(config, KeyRing.from_config(config))
            generation = build_generation(config, lasting, number)
            await generation.start()
            # from here to the end of the swap nothing awaits: a request sees one generation or the other
            old = self.current
            lasting.keys.use_config(config)
            lasting.console.access = config.server.access_log
            lasting.console.secret_envs = tuple(secret_envs(config))
            self.handlers.use(generation)
            self.current, self.raw = generation, raw
            for follow in self.on_swap:
                follow(generation)
            task = asyncio.create_task(old.retire())
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            self._retired.append(old)
            # a retirement cut short by the stop leaves the generation to the stop to close
            task.add_done_callback(lambda done: done.cancelled() or self._retired.remove(old))
            if self.board is not None:
                self.board.note_serving(number)
        log.info("reload: worker %d serves generation %d: %s", os.getpid(), number, summary(config))

    async def _open_limiter(self, config: Config, ring: Any) -> None:
        """A reload brought the first key with a rate limit or a budget: open the counters now."""
        if not ring.limited:
            return
        from fastroute.governance.limiter import Limiter
        from fastroute.server.backends import open_counters

        counters = open_counters(config, ring)
        if counters is not None:
            await counters.start()
            self.opened.append(counters)
            self.lasting.limiter = Limiter(counters)

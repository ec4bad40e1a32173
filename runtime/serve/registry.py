"""The models one server process serves, by name and version, kept in step with the repository: at start,
on every poll (``poll`` mode) and on load and unload requests (``explicit`` mode). Each new or changed
version is loaded in a daemon thread of its own (checked by ``models.load_model``) within a time limit, and
swapped in on the event loop, so a request in flight keeps the version it started with; a version that does
not check, or whose load fails or runs past the limit, is refused with a log line naming it, and whatever
served before keeps serving. A version is visible to requests (``lookup``) from the moment it
is swapped in, with its state READY at the same time, so that it answers 404 until it can be served and
200 from then on. An unloaded version is gone at once (404) and its batcher finishes what it had queued."""
from __future__ import annotations

import asyncio
import re
import threading
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from torchport.runtime.errors import TorchportError
from torchport.runtime.serve.models import LoadSettings, ServedModel, load_model
from torchport.runtime.serve.repository import ModelEntry, fingerprint, is_single_model, scan, scan_model
from torchport.runtime.serve.stats import ModelStats

READY, UNAVAILABLE = "READY", "UNAVAILABLE"
MODEL_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class RepositoryError(Exception):
    """A load or unload request the repository cannot carry out; the message says why."""


@dataclass
class _Plan:
    """What bringing one model in step with its entry takes: worked out off the event loop, then the versions
    to load (``pending``: version -> (path, fingerprint, the statistics a reload keeps)) loaded each in a
    thread of its own, within the load time limit."""
    loaded: dict[str, ServedModel] = field(default_factory=dict)
    refused: dict[str, tuple[str, str]] = field(default_factory=dict)  # version -> (fingerprint, reason)
    unchanged: set[str] = field(default_factory=set)
    pending: dict[str, tuple[Path, str, ModelStats | None]] = field(default_factory=dict)


class Registry:
    """Served models by name and version, the highest of each, and each version's state."""

    def __init__(self, root: Path, load_settings: LoadSettings, control_mode: str = "none",
                 model_name: str | None = None, log: Callable[[str], None] = print):
        self.root, self.load_settings, self.control_mode = root, load_settings, control_mode
        self.model_name, self.log = model_name, log
        self.single = is_single_model(root)
        self.models: dict[str, dict[str, ServedModel]] = {}
        self.states: dict[str, dict[str, tuple[str, str]]] = {}  # name -> version ("" for the model) -> state
        self._latest: dict[str, ServedModel] = {}  # name -> its highest served version
        self._refused: dict[tuple[str, str], str] = {}  # (name, version) -> fingerprint refused
        self._problems: dict[str, str] = {}  # name -> why the whole model is refused, as last logged
        self._loading: set[tuple[str, str]] = set()  # (name, version) whose load thread is running
        self._lock: asyncio.Lock | None = None

    # --- reading -------------------------------------------------------------------------------------
    def lookup(self, name: str, version: str | None = None) -> ServedModel | None:
        """The served version (the highest when ``version`` is None), or None."""
        if not version:
            return self._latest.get(name)
        versions = self.models.get(name)
        return versions.get(version) if versions else None

    def reason(self, name: str) -> str | None:
        """Why ``name`` is not served, as far as this process knows (no repository scan: 404s stay cheap)."""
        states = self.states.get(name)
        if not states:
            return None
        return next((r for _, (s, r) in sorted(states.items(), key=lambda kv: kv[0].zfill(20), reverse=True)
                     if s != READY and r), None)

    def versions(self, name: str) -> list[str]:
        return sorted(self.models.get(name, {}), key=int)

    def served(self) -> list[ServedModel]:
        return [m for name in sorted(self.models) for _, m in sorted(self.models[name].items(), key=lambda kv: int(kv[0]))]

    def index(self, ready_only: bool = False) -> list[dict]:
        """Triton's repository index: every model of the repository (and any still served) with the state of
        each version it has had, and the reason when it is not ready."""
        try:
            names = set(scan(self.root, self.model_name))
        except OSError:
            names = set()
        out = []
        for name in sorted(names | set(self.states) | set(self.models)):
            states = self.states.get(name) or {"": (UNAVAILABLE, "not loaded")}
            for version, (state, reason) in sorted(states.items(), key=lambda kv: (kv[0] == "", kv[0].zfill(20))):
                if ready_only and state != READY:
                    continue
                item = {"name": name}
                if version:
                    item["version"] = version
                item["state"] = state
                if reason:
                    item["reason"] = reason
                out.append(item)
        return out

    def snapshots(self) -> list[dict]:
        """Statistics snapshots of every served version (``stats.ModelStats.snapshot``)."""
        return [m.stats.snapshot() for m in self.served()]

    # --- changing ------------------------------------------------------------------------------------
    def start(self, names: Iterable[str] | None = None) -> dict[str, list[str]]:
        """Load at start, before serving (no event loop needed): every model of the repository, or ``names``
        ("*" for all). Returns the refusals per model."""
        entries = scan(self.root, self.model_name)
        wanted = entries if names is None or "*" in names else {n: entries.get(n) for n in names}
        problems = {}
        for name, entry in wanted.items():
            if entry is None:
                problems[name] = [f"{self.root} has no model {name!r}"]
                self.log(f"refused {name}: {problems[name][0]}")
        plans = {name: self._plan(name, entry, retry=True) for name, entry in wanted.items() if entry is not None}
        loads = {name: self._start_loads(name, wanted[name], plan) for name, plan in plans.items()}
        futures.wait([f for each in loads.values() for f in each.values()], timeout=self.load_settings.load_timeout_s)
        for name, plan in plans.items():
            self._collect(plan, loads[name])
            problems[name] = self._apply(name, wanted[name], plan)
        return {k: v for k, v in problems.items() if v}

    def _entry(self, name: str) -> ModelEntry | None:
        """The model ``name`` as it is on disk now, or None (names that could leave the repository are none)."""
        if self.single:
            return scan(self.root, self.model_name).get(name)
        if not MODEL_NAME.match(name) or name.startswith("."):
            return None
        path = self.root / name
        return scan_model(path, name) if path.is_dir() else None

    async def load(self, name: str) -> None:
        """(Re)load one model from the repository now: new and changed versions the policy wants are loaded,
        versions it no longer wants unloaded. RepositoryError when the model is not there or a version was
        refused (versions that were served before keep serving)."""
        entry = self._entry(name)
        if entry is None:
            raise RepositoryError(f"failed to load {name!r}: the repository {self.root} has no model {name!r}")
        problems = await self._reconcile({name: entry}, retry=True)
        if problems.get(name):
            raise RepositoryError(f"failed to load {name!r}: " + "; ".join(problems[name]))

    async def unload(self, name: str) -> None:
        """Stop serving every version of ``name`` now; requests already queued are still answered."""
        async with self._get_lock():
            if name not in self.models and self._entry(name) is None:
                raise RepositoryError(f"failed to unload {name!r}: no model {name!r} is loaded or in the repository")
            self._unload(name, "asked to unload")

    async def poll(self) -> dict[str, list[str]]:
        """One poll of the repository: models and versions that appeared, changed or went away are loaded,
        reloaded or unloaded; a version refused before is tried again only once its files change."""
        loop = asyncio.get_running_loop()
        entries = await loop.run_in_executor(None, scan, self.root, self.model_name)
        gone = {name: None for name in self.models if name not in entries}
        return await self._reconcile({**entries, **gone}, retry=False)

    def _get_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _reconcile(self, entries: dict[str, ModelEntry | None], retry: bool) -> dict[str, list[str]]:
        """Bring the models of ``entries`` in step with them (None: gone from the repository): every version to
        load is loaded in a thread of its own, all at once, and waited for at most the load time limit; a
        load that fails or runs past it is refused, and nothing else waits for it."""
        loop = asyncio.get_running_loop()
        problems = {}
        async with self._get_lock():
            plans = {}
            for name, entry in entries.items():
                if entry is None:
                    self._unload(name, "removed from the repository")
                else:
                    plans[name] = await loop.run_in_executor(None, self._plan, name, entry, retry)
            loads = {name: {version: asyncio.wrap_future(f) for version, f in
                            self._start_loads(name, entries[name], plan).items()} for name, plan in plans.items()}
            waiting = [f for each in loads.values() for f in each.values()]
            if waiting:
                await asyncio.wait(waiting, timeout=self.load_settings.load_timeout_s)
            for name, plan in plans.items():
                self._collect(plan, loads[name])
                problems[name] = self._apply(name, entries[name], plan)
            for late in waiting:
                late.cancel()  # a load past the time limit: its thread ends on its own, unheard
        return {k: v for k, v in problems.items() if v}

    def _plan(self, name: str, entry: ModelEntry, retry: bool) -> _Plan:
        """Which versions the policy wants that are new or changed (their fingerprints read the disk, so this
        runs off the event loop); nothing is loaded yet."""
        plan = _Plan()
        if entry.problem is not None:
            return plan
        current = self.models.get(name, {})
        for version, path in entry.selected().items():
            fp = fingerprint(path)
            served = current.get(version)
            if served is not None and served.fingerprint == fp:
                plan.unchanged.add(version)
            elif not retry and self._refused.get((name, version)) == fp:
                plan.refused[version] = (fp, "")  # refused before and unchanged since: not tried again
            elif (name, version) in self._loading:
                plan.refused[version] = (fp, "an earlier load of this version is still running past the load "
                                             "time limit; it is tried again once its files change")
            else:
                plan.pending[version] = (path, fp, served.stats if served is not None else None)
        return plan

    def _start_loads(self, name: str, entry: ModelEntry, plan: _Plan) -> dict[str, futures.Future]:
        """Start loading each of the plan's pending versions in a daemon thread of its own (a load that never
        ends holds neither another load, nor the next poll, nor the process's exit)."""
        started = {}
        for version, (path, fp, stats) in plan.pending.items():
            future: futures.Future = futures.Future()
            key = (name, version)

            def load(path=path, version=version, fp=fp, stats=stats, future=future, key=key) -> None:
                try:
                    future.set_result(load_model(path, name, version, self.load_settings, fp, entry.config, stats))
                except BaseException as e:
                    future.set_exception(e)
                finally:
                    self._loading.discard(key)

            self._loading.add(key)
            threading.Thread(target=load, name=f"torchport load {name} {version}", daemon=True).start()
            started[version] = future
        return started

    def _collect(self, plan: _Plan, loads: dict) -> None:
        """Move each started load's outcome into the plan: loaded, refused with its reason, or refused for
        running past the time limit."""
        for version, future in loads.items():
            fp = plan.pending[version][1]
            if not future.done():
                plan.refused[version] = (fp, f"loading took longer than {self.load_settings.load_timeout_s:g} s "
                                             "(--model-load-timeout-s) and was given up; it is tried again once "
                                             "its files change")
            elif isinstance(future.exception(), TorchportError):
                plan.refused[version] = (fp, str(future.exception()))
            elif future.exception() is not None:  # onnxruntime and the file system raise their own kinds
                error = future.exception()
                plan.refused[version] = (fp, f"{type(error).__name__}: {error}")
            else:
                plan.loaded[version] = future.result()

    def _apply(self, name: str, entry: ModelEntry, plan: _Plan) -> list[str]:
        """Swap the plan's versions in (on the event loop's thread); returns the refusals."""
        current = self.models.setdefault(name, {})
        states = self.states.setdefault(name, {})
        states.pop("", None)
        problems = []
        if entry.problem is not None:
            keep = f"; versions {', '.join(self.versions(name))} keep serving" if current else ""
            if self._problems.get(name) != entry.problem:  # said once, not on every poll
                self.log(f"refused {name}: {entry.problem}{keep}")
                self._problems[name] = entry.problem
            if not current:
                states[""] = (UNAVAILABLE, entry.problem)
            return [entry.problem]
        self._problems.pop(name, None)
        for version, (fp, reason) in plan.refused.items():
            if not reason:
                continue
            self._refused[(name, version)] = fp
            old = current.get(version)
            keep = ("; the copy loaded before keeps serving" if old is not None
                    else f"; versions {', '.join(self.versions(name))} keep serving" if current else "")
            self.log(f"refused {name} version {version} ({entry.versions[version]}): {reason}{keep}")
            problems.append(f"version {version}: {reason}")
            if old is None:
                states[version] = (UNAVAILABLE, reason)
        for version, served in plan.loaded.items():
            replaced = version in current
            current[version] = served
            states[version] = (READY, "")
            self._relatest(name)
            self._refused.pop((name, version), None)
            self.log(f"{'reloaded' if replaced else 'loaded'} {name} version {version} from {served.path} "
                     f"({served.checks})")
        wanted = set(entry.selected())
        unwanted = [v for v in current if v not in wanted]
        if unwanted and not plan.refused:
            for version in unwanted:
                self._unload_version(name, version, f"not among {entry.policy.describe()}")
        elif unwanted:
            self.log(f"{name}: version(s) {', '.join(sorted(unwanted, key=int))} keep serving until the versions "
                     f"its policy asks for ({', '.join(sorted(wanted, key=int))}) load")
        if not current:
            self.models.pop(name, None)
        self._relatest(name)
        return problems

    def _unload_version(self, name: str, version: str, why: str) -> None:
        served = self.models.get(name, {}).pop(version, None)
        if served is None:
            return
        self._relatest(name)
        self.states.setdefault(name, {})[version] = (UNAVAILABLE, f"unloaded: {why}")
        queued = served.stats.queued
        self.log(f"unloaded {name} version {version} ({why})" +
                 (f"; its {queued} queued request(s) are still answered" if queued else ""))

    def _unload(self, name: str, why: str) -> None:
        for version in list(self.models.get(name, {})):
            self._unload_version(name, version, why)
        self.models.pop(name, None)
        self._relatest(name)
        states = self.states.setdefault(name, {})
        if not states:
            states[""] = (UNAVAILABLE, why)

    def _relatest(self, name: str) -> None:
        """Keep the highest served version of ``name`` in step with its versions, in the same step as they
        change (so that ``lookup`` never sees one without the other)."""
        versions = self.models.get(name)
        if versions:
            self._latest[name] = versions[max(versions, key=int)]
        else:
            self._latest.pop(name, None)

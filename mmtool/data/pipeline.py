"""The prep pipeline of on-disk datasets: parallel, resumable, atomic, with a failure budget.

A dataset family lists its samples as :class:`PrepItem` s and gives a ``process(item, out) -> record``
function that decodes one sample's raw files and writes its loader-ready outputs under ``out``
(atomically: :func:`save_npy`, :func:`atomic_dir`). :func:`run_pipeline` then

* runs ``process`` over the items in ``workers`` processes (inline with 0), a bounded number in flight;
* shows a progress bar with ETA on a terminal, and a plain line every few percent otherwise;
* journals every finished item in ``out/.journal.jsonl`` (the main process appends one line per item),
  so a killed prep, re-run, reuses what was finished and decodes nothing twice. Each entry carries the
  item's *fingerprint* (:func:`fingerprint`): its list row (split, label, sources, meta) and the identity of
  every raw file it reads (size, modification and change times, inode; a folder's entries likewise). An
  entry whose item changed since (another label or split in the list, a file replaced or edited, another
  ``--raw`` folder) is redone, never reused;
* turns a broken input into a skip: ``process`` raises :class:`SkipSample` with one of the
  :data:`REASONS`; anything else it raises is recorded as reason ``error`` with the exception's text;
* stops with "too many failures" once skipped items exceed ``max_skip_frac`` of the items (clips listed
  but absent on disk are *missing*, reported apart, and not counted there: deleted YouTube videos make
  every real VGG-Sound or Kinetics copy incomplete); missing clips have their own, looser budget
  (``max_missing_frac`` of the listed ones, checked before anything is decoded: a wrong ``--raw`` folder
  or layout fails at once), and a prep that ends with no usable sample fails;
* on SIGTERM or SIGINT stops its workers at once, keeps the journal, and raises :class:`PrepInterrupted`
  (the command says how to continue and exits 143 / 130); workers end with the prep process however it
  ends (``kill -9`` included), and ignore Ctrl-C themselves so that only the main process handles it;
* writes ``skipped.jsonl`` and ``missing.jsonl`` sorted by key, so the final outputs are byte-identical
  whatever the completion order, the number of workers, or how often prep was interrupted (the journal
  is removed by :func:`mmtool.data.prepare` once the manifest is written);
* survives a decoder that crashes its worker process: the items that were in flight are retried one
  by one in a fresh process each, and the one that crashes again is skipped as ``error``.

Outputs must be deterministic bytes: ``.npy`` (header + data) and plain files, never ``np.savez`` (zip
entries carry the write time) or ``torch.save`` (a random serialization id).

What a ``process`` function deals in (the item, the skip, the output writers) is in
:mod:`mmtool.data.pipeline_io`; fingerprints and the journal are in :mod:`mmtool.data.pipeline_journal`;
this module runs the items.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmtool.data.pipeline_io import PrepItem, SkipSample, write_jsonl
from mmtool.data.pipeline_journal import JOURNAL, fingerprint, read_journal
from mmtool.errors import PrepInterrupted, UserError
from mmtool.faults import fault_point
from mmtool.procs import exit_with


@dataclass
class PipelineResult:
    records: list[dict]  # one per prepared item, sorted by key (what ``process`` returned)
    skipped: list[dict]  # {key, split, label, sources, reason, detail}, sorted by key
    missing: list[dict]  # as given, sorted by key
    reused: int  # items taken from the journal of an interrupted earlier run
    seconds: float

    def summary(self, items: int) -> dict:
        """The manifest's account of this run: what was skipped (and why), missing, and how the run went (a resumed
        prep reuses the items an interrupted one finished)."""
        return {
            "skipped": [{"key": s["key"], "reason": s["reason"]} for s in self.skipped],
            "skipped_counts": dict(sorted(Counter(s["reason"] for s in self.skipped).items())),
            "missing": len(self.missing),
            "run": {"items": items, "reused": self.reused, "processed": items - self.reused, "seconds": self.seconds},
        }


# --------------------------------------------------------------------------------------------- running
def run_pipeline(
    items: Sequence[PrepItem],
    process: Callable[[PrepItem, Path], dict],
    out: Path,
    *,
    workers: int = 0,
    max_skip_frac: float = 0.05,
    missing: Sequence[dict] = (),
    max_missing_frac: float = 1.0,
    raw: Path | None = None,
    label: str = "prep",
) -> PipelineResult:
    """Prepare ``items`` into ``out`` (see the module docstring). ``process`` must be picklable when
    ``workers`` > 0 (a module-level function or a ``functools.partial`` of one). ``raw``: the folder that
    relative ``sources`` are in (their files' identity is part of each item's fingerprint)."""
    for flag, value in (("--max-skip-frac", max_skip_frac), ("--max-missing-frac", max_missing_frac)):
        if not 0 <= value <= 1:
            raise UserError(f"{flag} must be in [0, 1], got {value}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_missing(len(items), missing, max_missing_frac, out)
    started = time.perf_counter()
    prints = {it.key: fingerprint(it, raw) for it in items}
    done = read_journal(out / JOURNAL, prints)
    todo = [it for it in items if it.key not in done]
    budget = max_skip_frac * len(items)
    _journaled(todo, process, out, workers, prints, done, budget, label, len(items))
    skips = sorted((_without_fp(e) for e in done.values() if "reason" in e), key=lambda e: e["key"])
    write_jsonl(out / "skipped.jsonl", skips)
    write_jsonl(out / "missing.jsonl", sorted(missing, key=lambda m: m["key"]))
    if len(skips) > budget:
        raise UserError(_too_many(len(skips), len(done), len(items), max_skip_frac, out / "skipped.jsonl"))
    records = sorted((e["record"] for e in done.values() if "record" in e), key=lambda r: r["key"])
    if not records:
        raise UserError(
            f"{label}: no usable sample: {len(items)} listed on disk, {len(skips)} skipped, {len(missing)} missing "
            f"(see {out / 'skipped.jsonl'} and {out / 'missing.jsonl'}); is --raw the dataset's published layout?"
        )
    return PipelineResult(records, skips, sorted(missing, key=lambda m: m["key"]), len(items) - len(todo),
                          round(time.perf_counter() - started, 3))  # fmt: skip


def _journaled(todo: list[PrepItem], process, out: Path, workers: int, prints: dict[str, str], done: dict[str, dict],
               budget: float, label: str, total: int) -> None:  # fmt: skip
    """Process ``todo``, journaling each finished item (with its fingerprint) and adding it to ``done``; stops
    between items on a signal (:class:`PrepInterrupted`) or at the first skip over ``budget``."""
    skipped = sum(1 for e in done.values() if "reason" in e)
    progress = Progress(total, label, already=len(done))
    stop = _StopOnSignal()
    try:
        with stop, open(out / JOURNAL, "a") as journal:
            for entry in _run(todo, process, out, workers, stop):
                journal.write(json.dumps({**entry, "fp": prints[entry["key"]]}, sort_keys=True) + "\n")
                journal.flush()
                done[entry["key"]] = entry
                skipped += "reason" in entry
                progress.advance()
                fault_point("prep_item")
                stop.check(label, len(done), total)
                if skipped > budget:
                    break
    finally:
        progress.close()


def _too_many(skipped: int, tried: int, total: int, frac: float, where: Path) -> str:
    """The failure-budget message: prep stops at the first item over the budget, so the items it never
    tried may hold more broken ones; the count says how far it got."""
    counted = (
        f"{skipped} of the first {tried} items skipped ({total} listed; prep stopped there, the rest were not tried)"
        if tried < total
        else f"{skipped} of {total} items skipped"
    )
    return f"too many failures: {counted}; see {where} (allowed: {frac:.0%}, --max-skip-frac)"


def _check_missing(found: int, missing: Sequence[dict], frac: float, out: Path) -> None:
    """Listed samples absent on disk beyond ``frac`` of the listed ones: a wrong ``--raw`` folder or layout
    more likely than deleted videos. Said before anything is decoded."""
    listed = found + len(missing)
    if missing and len(missing) > frac * listed:
        write_jsonl(out / "missing.jsonl", sorted(missing, key=lambda m: m["key"]))
        raise UserError(
            f"{len(missing)} of {listed} listed samples are missing on disk ({len(missing) / listed:.0%}; allowed: "
            f"{frac:.0%}, --max-missing-frac); see {out / 'missing.jsonl'}: is --raw the right folder?"
        )


def _without_fp(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k != "fp"}


class _StopOnSignal:
    """SIGTERM / SIGINT during a prep: remembered, and acted on between items (:meth:`check`), where the
    journal is consistent. A flag rather than an exception raised from the handler: a decoder library that
    calls back into Python (decord) can swallow an exception raised inside its call, never a flag.
    Only the main thread can install handlers; elsewhere (a prep run from a worker thread) this is a no-op."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._saved[sig] = signal.signal(sig, self._note)
        return self

    def _note(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum = signum  # a second signal while stopping changes nothing

    def __exit__(self, *exc: object) -> None:
        import signal

        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    @property
    def stopped(self) -> bool:
        return self.signum is not None

    def check(self, label: str, done: int, total: int) -> None:
        if self.signum is not None:
            raise PrepInterrupted(self.signum, f"{label}: interrupted after {done}/{total} items, which are kept")


def _attempt(process: Callable[[PrepItem, Path], dict], item: PrepItem, out: Path) -> dict:
    """One item -> its journal entry: {"key", "record"} or {"key", "reason", ...}."""
    try:
        record = process(item, out)
    except SkipSample as skip:
        return _skip_entry(item, skip.reason, skip.detail)
    except Exception as err:  # noqa: BLE001  (an unknown failure of one file must not end a day-long prep)
        return _skip_entry(item, "error", clean_detail(f"{type(err).__name__}: {err}"))
    return {"key": item.key, "record": {"key": item.key, **record}}


def clean_detail(text: str) -> str:
    """An error message without what changes from run to run (clock stamps, absolute paths, addresses),
    so skipped.jsonl stays byte-identical; the first line only."""
    import re

    text = text.strip().splitlines()[0] if text.strip() else ""
    text = re.sub(r"\[\d{2}:\d{2}:\d{2}\]\s*", "", text)
    text = re.sub(r"0x[0-9a-fA-F]+", "0x…", text)
    return re.sub(r"(/[^\s:'\"]+)+", lambda m: Path(m.group(0)).name, text).strip()


def _skip_entry(item: PrepItem, reason: str, detail: str) -> dict:
    return {"key": item.key, "split": item.split, "label": item.label, "sources": list(item.sources),
            "reason": reason, "detail": detail[:500]}  # fmt: skip


def _run(todo: list[PrepItem], process, out: Path, workers: int, stop: _StopOnSignal) -> Iterator[dict]:
    if workers <= 0:
        for item in todo:
            if stop.stopped:
                return
            yield _attempt(process, item, out)
        return
    queue = list(reversed(todo))  # popped from the end: original order
    while queue and not stop.stopped:
        crashed = yield from _pool_pass(queue, process, out, workers, stop)
        for item in crashed:  # one at a time, each in a fresh process: find the file that kills decoders
            survivors = yield from _pool_pass([item], process, out, 1, stop)
            for culprit in survivors:
                yield _skip_entry(culprit, "error", "the decoder crashed its worker process")


def _worker_init(owner: int) -> None:
    """A prep worker: Ctrl-C reaches the whole terminal's process group, but only the main process acts on
    it (it stops the workers); and a worker ends with the prep process, however that ends."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with(owner)


def _pool_pass(queue: list[PrepItem], process, out: Path, workers: int, stop: _StopOnSignal):
    """Run items popped from ``queue`` in a pool until it is empty or the pool breaks; yields entries and
    returns the items that were in flight when a worker died. On a signal (or any exit before the queue
    is done: the failure budget, an error) the workers are ended at once, not after their current item."""
    import multiprocessing as mp
    from concurrent.futures.process import BrokenProcessPool

    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    pending: dict[Future, PrepItem] = {}
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context(method), initializer=_worker_init,
                               initargs=(os.getpid(),))  # fmt: skip
    finished_all = False
    try:
        while (queue or pending) and not stop.stopped:
            while queue and len(pending) < 4 * workers:
                item = queue.pop()
                pending[pool.submit(_attempt, process, item, out)] = item
            finished, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)  # wakes up for a signal too
            for fut in finished:
                entry = fut.result()
                del pending[fut]
                yield entry
        finished_all = not queue and not pending
    except BrokenProcessPool:
        return list(pending.values())
    finally:
        _close_pool(pool, kill=not finished_all)
    return []


def _close_pool(pool: ProcessPoolExecutor, kill: bool) -> None:
    """Shut ``pool`` down; ``kill``: end its workers now (SIGKILL: their items are redone by the next run)
    instead of waiting for the items they are decoding."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public handle on the workers
    pool.shutdown(wait=not kill, cancel_futures=True)
    if kill:
        for proc in processes:
            proc.kill()
        for proc in processes:
            proc.join()


class Progress:
    """A rich bar with ETA on a terminal; otherwise a line on stderr every ``step`` percent."""

    def __init__(self, total: int, label: str, already: int = 0, step: int = 5) -> None:
        self.total, self.label, self.count, self.step = total, label, already, step
        self.start, self.start_count = time.perf_counter(), already
        self.next_pct = (already * 100 // max(total, 1)) // step * step + step
        self.bar = None
        if sys.stderr.isatty() and total:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                console=Console(stderr=True), transient=True)  # fmt: skip
            self.bar.start()
            self.task = self.bar.add_task(label, total=total, completed=already)
        elif already:
            print(f"{label}: resuming, {already}/{total} already done", file=sys.stderr, flush=True)

    def advance(self) -> None:
        self.count += 1
        if self.bar is not None:
            self.bar.update(self.task, advance=1)
            return
        pct = self.count * 100 // max(self.total, 1)
        if pct >= self.next_pct or self.count == self.total:
            self.next_pct = (pct // self.step) * self.step + self.step
            print(self.line(), file=sys.stderr, flush=True)

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        rate = (self.count - self.start_count) / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.count) / rate if rate > 0 else float("nan")
        eta = time.strftime("%H:%M:%S", time.gmtime(left)) if left == left else "?"
        pct = self.count * 100 // max(self.total, 1)
        return f"{self.label}: {pct}% ({self.count}/{self.total}), {rate:.1f}/s, ETA {eta}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()

"""One batch run twice, one item at a time and then N in flight, to see what parallelism bought.

:func:`run_compare` runs the same pipeline over the same items twice through
:func:`chainfleet.runner.api.arun`: first at concurrency 1 into ``out/sequential/``, then at the
given concurrency into ``out/parallel/``, with the response cache off so both runs really call
the model. It then reads both runs back item by item and writes ``out/report.json``:

- ``sequential``, ``parallel``: each run's own report (as in ``chainfleet run``);
- ``time_saved_pct``: ``100 * (1 - parallel wall / sequential wall)``, from the two measured
  wall times (not from the sum of call times that a single run's report estimates);
- ``outputs_identical``: whether every item's final output is the same text in both runs;
- ``gate_outcomes_identical``: whether every gated (item, stage) ended the same way in both
  runs (passed, accepted or failed), after the same number of revisions, each try passing or
  failing alike; None when the pipeline has no gate. ``gates`` holds the count of differing
  outcomes and, per gated stage, both runs' pass rates and revisions side by side (what a
  sampling model, which cannot be expected to be identical, is judged by);
- ``quality``: each item's quality score in both runs side by side, the means and the mean
  difference (parallel minus sequential). A sampling model writes different texts on each run,
  so identical outputs cannot be expected of it; the quality scores tell whether running in
  parallel changed how good the outputs are. It should not.

Example::

    report = await run_compare(pipeline, "topics.txt", concurrency=5, out="runs/compare")
    print(f"{report.time_saved_pct:.0f}% saved, outputs identical: {report.outputs_identical}")
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from chainfleet.clock import Clock
from chainfleet.errors import ConfigError
from chainfleet.inputs import InputSource
from chainfleet.pipeline import Pipeline
from chainfleet.report.agents import agent_steps
from chainfleet.report.gates import gate_outcomes
from chainfleet.report.model import LIST_CAP, RunReport
from chainfleet.report.quality import topic_of
from chainfleet.runner.api import Items, arun
from chainfleet.store.runstore import ItemRecord

if TYPE_CHECKING:
    from chainfleet.runner.core import Runner
    from chainfleet.store.runstore import RunStore

__all__ = ["CompareReport", "Display", "run_compare"]

#: the quality measures kept per item and mode in the comparison
QUALITY_KEYS = ("score", "words", "readability", "topic_covered")

SEQUENTIAL, PARALLEL = "sequential", "parallel"


class Display(Protocol):
    """A progress display for one run: ``start`` from ``arun(on_start=...)``, then ``stop``."""

    def start(self, runner: Runner) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class CompareReport:
    """The two runs and what they say together; ``to_dict()`` is ``report.json``."""

    sequential: RunReport
    parallel: RunReport
    outputs_identical: bool
    #: items in either run, and those whose final outputs differ between the runs
    items: int = 0
    outputs_differing: int = 0
    #: per item (at most ``LIST_CAP``): id, topic, each mode's quality measures, score difference
    quality: list[dict[str, Any]] = field(default_factory=list)
    #: items that succeeded in both runs (the means are over these)
    quality_items: int = 0
    mean_score_sequential: float | None = None
    mean_score_parallel: float | None = None
    #: mean of (parallel score - sequential score) per item
    mean_score_difference: float | None = None
    #: items waiting for review in the parallel run, and items waiting in one run but not the
    #: other (``review:``); None when no item waits in either run
    review_queued: int | None = None
    review_differing: int = 0
    #: gated (item, stage) pairs in either run, and those whose gate outcomes differ; None
    #: when no stage has a gate
    gated: int | None = None
    gates_differing: int = 0
    #: items an agent worked on in either run, and those whose trajectories (every tool call,
    #: its arguments and result, every model turn) differ; None when no stage is an agent
    trajectories: int | None = None
    trajectories_differing: int = 0

    @property
    def trajectories_identical(self) -> bool | None:
        """Whether every agent took the same steps in both runs (None: no agent stage)."""
        return None if self.trajectories is None else self.trajectories_differing == 0

    @property
    def gate_outcomes_identical(self) -> bool | None:
        """Whether every gated item ended alike in both runs (None: no gates)."""
        return None if self.gated is None else self.gates_differing == 0

    def gate_sides(self) -> dict[str, Any]:
        """Per gated stage, both runs' pass rates and revisions side by side."""
        sides: dict[str, Any] = {}
        for mode, run in ((SEQUENTIAL, self.sequential), (PARALLEL, self.parallel)):
            for stage, s in ((run.gates or {}).get("stages") or {}).items():
                sides.setdefault(stage, {})[mode] = {
                    "outcomes": s["outcomes"],
                    "revisions_per_item": s["revisions_per_item"],
                    "checks": {
                        name: {k: c[k] for k in ("first_try_pass_pct", "final_pass_pct")}
                        for name, c in s["checks"].items()
                    },
                }
        return sides

    @property
    def review_queue_identical(self) -> bool | None:
        """Whether the same items wait for review in both runs (None: nothing waits)."""
        return None if self.review_queued is None else self.review_differing == 0

    @property
    def concurrency(self) -> int:
        return self.parallel.concurrency

    @property
    def time_saved_pct(self) -> float | None:
        seq = self.sequential.wall_seconds
        return None if seq <= 0 else 100.0 * (1 - self.parallel.wall_seconds / seq)

    @property
    def speedup(self) -> float | None:
        par = self.parallel.wall_seconds
        return None if par <= 0 else self.sequential.wall_seconds / par

    @property
    def estimate_error_pct(self) -> float | None:
        """How far the parallel run's own "one at a time" estimate (chainfleet.report.estimate) was
        from the sequential run measured here, in percent of the measured time."""
        measured = self.sequential.wall_seconds
        if measured <= 0 or self.parallel.sequential_seconds <= 0:
            return None
        return 100.0 * (self.parallel.sequential_seconds - measured) / measured

    @property
    def exit_code(self) -> int:
        """0 when both runs succeeded fully; else the more serious of the two runs' codes
        (130 interrupted, 2 stopped by configuration, 1 items failed)."""
        codes = {self.sequential.exit_code, self.parallel.exit_code}
        for code in (130, 2, 1, 3):
            if code in codes:
                return code
        return 0

    def to_dict(self) -> dict[str, Any]:
        saved, speedup = self.time_saved_pct, self.speedup
        return {
            SEQUENTIAL: self.sequential.to_dict(),
            PARALLEL: self.parallel.to_dict(),
            "concurrency": self.concurrency,
            "time_saved_pct": None if saved is None else round(saved, 1),
            "speedup": None if speedup is None else round(speedup, 3),
            "estimate_check": {
                "estimated_seconds": round(self.parallel.sequential_seconds, 4),
                "measured_seconds": round(self.sequential.wall_seconds, 4),
                "error_pct": _round(self.estimate_error_pct),
            },
            "outputs_identical": self.outputs_identical,
            "items": self.items,
            "outputs_differing": self.outputs_differing,
            "gate_outcomes_identical": self.gate_outcomes_identical,
            "gates": None
            if self.gated is None
            else {"items": self.gated, "differing": self.gates_differing, "stages": self.gate_sides()},
            "review_queue_identical": self.review_queue_identical,
            "review_queued": self.review_queued,
            "trajectories_identical": self.trajectories_identical,
            "trajectories": None
            if self.trajectories is None
            else {"items": self.trajectories, "differing": self.trajectories_differing},
            "quality": {
                "items": self.quality_items,
                "mean_score_sequential": _round(self.mean_score_sequential),
                "mean_score_parallel": _round(self.mean_score_parallel),
                "mean_score_difference": _round(self.mean_score_difference),
                "per_item": self.quality,
            },
        }


async def run_compare(
    pipeline: Pipeline,
    items: Items,
    *,
    concurrency: int | Literal["auto"],
    out: str | os.PathLike[str],
    clock: Clock | None = None,
    progress: Callable[[str], Display] | None = None,
    replace: bool = False,
    **run_kwargs: Any,
) -> CompareReport:
    """Run ``items`` one at a time, then ``concurrency`` at a time; compare; write report.json.

    ``run_kwargs`` go to both :func:`~chainfleet.runner.api.arun` calls (``model``, ``rpm``,
    ``max_attempts`` ...). ``progress`` makes a display per run from its label (``"one at a
    time"``, ``"parallel, concurrency N"``). ``items`` must be readable twice: a path, a list,
    or a reiterable ``InputSource`` (a one-shot iterator is read into a list first).

    A comparison is never resumed (its times would mean nothing): a folder that already holds
    one is refused, or with ``replace`` its two run folders are deleted first (the demo does so).
    """
    for name in ("concurrency", "out", "on_start", "cache", "resume"):
        if name in run_kwargs:
            raise TypeError(f"run_compare() sets {name!r} itself")
    items = _twice(items)
    out = Path(out)
    _clear(out, replace=replace)
    options = {**run_kwargs, **_cache_off()}
    runs: dict[str, RunReport] = {}
    labels = {SEQUENTIAL: "one at a time", PARALLEL: f"parallel, concurrency {concurrency}"}
    for mode, n in ((SEQUENTIAL, 1), (PARALLEL, concurrency)):
        display = progress(labels[mode]) if progress is not None else None
        try:
            runs[mode] = await arun(
                pipeline,
                items,
                concurrency=n,
                out=out / mode,
                clock=clock,
                on_start=display.start if display is not None else None,
                **options,
            )
        finally:
            if display is not None:
                await display.stop()
    report = compare_reports(runs[SEQUENTIAL], runs[PARALLEL])
    (out / "report.json").write_text(
        json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return report


def compare_reports(sequential: RunReport, parallel: RunReport) -> CompareReport:
    """Read both runs back item by item (memory stays flat) and compare outputs and quality."""
    report = CompareReport(sequential=sequential, parallel=parallel, outputs_identical=True)
    last = sequential.stages_order[-1]
    sums = {SEQUENTIAL: 0.0, PARALLEL: 0.0}
    for seq, par in _pairs(sequential.results(), parallel.results()):
        report.items += 1
        if seq is None or par is None or seq.outputs.get(last) != par.outputs.get(last):
            report.outputs_differing += 1
        _count_review(report, seq, par)
        record = seq if seq is not None else par
        assert record is not None
        row: dict[str, Any] = {
            "id": record.id,
            "topic": topic_of(record.input, sequential.input_field),
            SEQUENTIAL: _quality(seq),
            PARALLEL: _quality(par),
            "score_difference": None,
        }
        if any(r is not None and r.status == "needs_review" for r in (seq, par)):
            row["needs_review"] = True
        if row[SEQUENTIAL] is not None and row[PARALLEL] is not None:
            a, b = row[SEQUENTIAL]["score"], row[PARALLEL]["score"]
            row["score_difference"] = round(b - a, 2)
            sums[SEQUENTIAL] += a
            sums[PARALLEL] += b
            report.quality_items += 1
        if len(report.quality) < LIST_CAP:
            report.quality.append(row)
    report.outputs_identical = report.outputs_differing == 0
    _compare_gates(report)
    _compare_trajectories(report)
    n = report.quality_items
    if n:
        report.mean_score_sequential = sums[SEQUENTIAL] / n
        report.mean_score_parallel = sums[PARALLEL] / n
        report.mean_score_difference = (sums[PARALLEL] - sums[SEQUENTIAL]) / n
    return report


def _compare_gates(report: CompareReport) -> None:
    """Count the gated (item, stage) pairs whose outcome, revisions or tries differ."""
    if (counts := _differing(report, gate_outcomes)) is not None:
        report.gated, report.gates_differing = counts


def _compare_trajectories(report: CompareReport) -> None:
    """Count the items whose agent steps differ between the runs (timings aside)."""
    if (counts := _differing(report, agent_steps)) is not None:
        report.trajectories, report.trajectories_differing = counts


def _differing(
    report: CompareReport, read: Callable[[RunStore, str], Mapping[Any, Any]]
) -> tuple[int, int] | None:
    """How many keys ``read`` finds in either run's store and how many of them differ; None when
    a run has no store or neither run has any."""
    seq, par = report.sequential, report.parallel
    if seq.store is None or par.store is None:
        return None
    a, b = read(seq.store, seq.run_id), read(par.store, par.run_id)
    if not a and not b:
        return None
    keys = a.keys() | b.keys()
    return len(keys), sum(a.get(key) != b.get(key) for key in keys)


def _count_review(report: CompareReport, seq: ItemRecord | None, par: ItemRecord | None) -> None:
    """Whether this item waits for review in both runs, or in one only."""
    waits = [r is not None and r.status == "needs_review" for r in (seq, par)]
    if any(waits):
        report.review_queued = (report.review_queued or 0) + waits[1]
        report.review_differing += waits[0] != waits[1]


def _pairs(
    left: Iterator[ItemRecord], right: Iterator[ItemRecord]
) -> Iterator[tuple[ItemRecord | None, ItemRecord | None]]:
    """Both runs' records matched by input position (both come in input order)."""
    a, b = next(left, None), next(right, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a.index < b.index):
            yield a, None
            a = next(left, None)
        elif a is None or b.index < a.index:
            yield None, b
            b = next(right, None)
        else:
            yield a, b
            a, b = next(left, None), next(right, None)


def _quality(record: ItemRecord | None) -> dict[str, Any] | None:
    if record is None or record.status != "succeeded" or not record.quality:
        return None
    return {key: record.quality.get(key) for key in QUALITY_KEYS}


def _twice(items: Items) -> Items:
    """``items`` in a form that can be read twice."""
    if isinstance(items, InputSource):
        if not items.reiterable:
            raise ConfigError("compare reads the input twice: give a file or a list, not a stream")
        return items
    if isinstance(items, str | os.PathLike | list | tuple):
        return items
    return list(items)


def _clear(out: Path, *, replace: bool) -> None:
    """Make room for a new comparison in ``out``: refuse a previous one, or delete it."""
    previous = [out / mode for mode in (SEQUENTIAL, PARALLEL) if (out / mode / "run.db").exists()]
    if previous and not replace:
        raise ConfigError("already holds a comparison; give another --out", where=str(out))
    for folder in previous:  # only our own run folders: each holds a run store
        shutil.rmtree(folder)
    with contextlib.suppress(FileNotFoundError):
        (out / "report.json").unlink()


def _cache_off() -> dict[str, Any]:
    """``cache=False`` when :func:`arun` has a response cache to turn off: a cached answer would
    make the second run free and the comparison meaningless."""
    return {"cache": False} if "cache" in inspect.signature(arun).parameters else {}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)

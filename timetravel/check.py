"""Full verification of a run and its derived folders, for ``timetravel check RUN``.

Each part is checked by the module that owns its format, and every problem
found is reported (not only the first): the run's arrays against their
recorded CRC32 checksums and for NaN/inf, the projection, the features and
the feedback log.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from timetravel.errors import TimetravelError


@dataclass
class CheckReport:
    """What :func:`check_run` found: ``lines`` to print, ``problems`` among them."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, message: str) -> None:
        self.problems.append(message)
        self.lines.append(f"PROBLEM {message}")


def check_run(path: str | os.PathLike) -> CheckReport:
    """Verify the run at ``path`` in full; never raises for a bad run (the report says what is wrong).

    Parameters
    ----------
    path : path-like
        The run directory.

    Returns
    -------
    CheckReport
    """
    from timetravel.detection import has_detection, load_detection
    from timetravel.feedback import FeedbackLog
    from timetravel.store import RunStore

    report = CheckReport()
    try:
        store = RunStore(path, verify="headers")
    except TimetravelError as exc:
        report.problem(str(exc))
        return report
    summed = unsummed = 0
    try:
        summed += store.verify_run_files()
    except TimetravelError as exc:
        report.problem(str(exc))
    for epoch in store.epochs:
        try:
            n = store.verify_epoch(epoch)
        except TimetravelError as exc:
            report.problem(str(exc))
            continue
        summed += n
        unsummed += n == 0
    report.lines.append(f"{store.path}: {len(store.epochs)} epochs, {summed} files match their checksums"
                        + (f", {unsummed} epochs written before checksums (scanned for NaN/inf only)" if unsummed else ""))
    try:
        projected = store.projected_epochs
        for epoch in projected:
            store.projection(epoch)
            store.territory(epoch)
        report.lines.append(f"projection: {len(projected)} epochs" if projected else "projection: none yet")
    except TimetravelError as exc:
        report.problem(str(exc))
    if has_detection(store):
        try:
            load_detection(store)
            report.lines.append("features: readable")
        except TimetravelError as exc:
            report.problem(str(exc))
    else:
        report.lines.append("features: none yet")
    try:
        state = FeedbackLog(store.path, store.n_samples, store.n_classes).read()
        for message in state.errors:
            report.problem(message)
        report.lines.append(f"feedback.jsonl: {len(state.events)} valid events")
    except TimetravelError as exc:
        report.problem(str(exc))
    report.lines.append("OK" if report.ok else f"{len(report.problems)} problem(s) found")
    return report

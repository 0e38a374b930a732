"""``--resume``: what an earlier run already counted, and at which threshold to go on.

A count is only a count at its threshold, so a slide counted at another threshold than
this run's is counted again, never skipped: a batch's counts are then all at one
threshold.  Without ``--threshold`` a resumed batch goes on at the threshold its result
file was counted at (a batch is finished the way it was started); a file that holds
several is refused, since which one to finish with is the person's choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.cli.output import ResultFile

SAME = 1e-9  # thresholds are written with repr(), so equal ones read back equal


class ResumeRefused(ValueError):
    """The result file cannot be resumed as asked; the message says what to do."""


@dataclass
class Plan:
    skip: set[str]  # slides counted by an earlier run at this run's threshold
    threshold: float | None  # this run's; None: the service's own, not known here
    recount: list[str] = field(default_factory=list)  # counted before at another threshold
    notes: list[str] = field(default_factory=list)  # said on stderr before the batch starts

    def earlier_count(self, results: ResultFile, paths: Sequence[str]) -> int:
        """Eosinophils the earlier runs counted on the slides this run skips."""
        return sum(int(results.number(p, "count") or 0) for p in paths if p in self.skip)


def _fmt(values: set[float]) -> str:
    return ", ".join(f"{v:g}" for v in sorted(values))


def plan(
    results: ResultFile,
    paths: Sequence[str],
    asked: float | None,
    default: float | None,
    thresholds: bool = True,
) -> Plan:
    """Which of ``paths`` to skip and the threshold to count the rest at.

    ``asked`` is ``--threshold`` (None: not given), ``default`` the service's threshold
    (None: not known), ``thresholds`` False for a service that counts at none.
    """
    done = results.done()
    if not thresholds:
        return Plan(skip=done, threshold=asked)
    wanted = set(paths)
    earlier = {p: results.number(p, "threshold") for p in done if p in wanted}
    values = {round(v, 9) for v in earlier.values() if v is not None}
    notes: list[str] = []
    threshold = asked
    if asked is None:
        if len(values) > 1:
            raise ResumeRefused(
                f"{results.path} holds slides counted at thresholds {_fmt(values)}; name the "
                "one to finish the batch at with --threshold (slides counted at another are "
                "counted again)"
            )
        if values:
            (threshold,) = values
            if default is None or abs(threshold - default) > SAME:
                notes.append(
                    f"note: going on at threshold {threshold:g}, the threshold the slides in "
                    f"{results.path} were counted at"
                )
        else:
            threshold = default
    recount = [
        p
        for p, v in earlier.items()
        if threshold is not None and v is not None and abs(v - threshold) > SAME
    ]
    if recount:
        others = {round(earlier[p] or 0.0, 9) for p in recount}
        slides = "slide" if len(recount) == 1 else "slides"
        notes.append(
            f"note: counting {len(recount)} {slides} again at threshold {threshold:g}: "
            f"{results.path} has them at {_fmt(others)}"
        )
    return Plan(skip=done - set(recount), threshold=threshold, recount=recount, notes=notes)

"""What a check ran: its status, with counts of what ran and what was skipped, and why.

One rule for every report that says "ok" (the GPU kit's sections, the load test's parity, ...): a
check is "ok" only when its subject ran in full. When nothing of the subject ran it is "skipped"
(with the reasons); when part of it ran it is "partial" and says how much. A check that ran nothing
is never reported as passed. Standard library only: the GPU kit imports it on a bare image.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

OK, PARTIAL, SKIPPED, FAILED, NOT_RUN = "ok", "partial", "skipped", "failed", "not_run"
# Statuses of a single item (a row, a case, a request) that count as "it ran".
RAN = frozenset({OK, FAILED, "flagged", "reference"})


@dataclass
class Tally:
    """Counts of one check's items by outcome, and the distinct reasons items were skipped."""

    ran: int = 0
    failed: int = 0
    skipped: int = 0
    not_run: int = 0  # cut short (a time guard), as opposed to skipped for a stated reason
    reasons: list[str] = field(default_factory=list)

    def add(self, status: str, reason: str = "") -> None:
        if status in RAN:
            self.ran += 1
            self.failed += status == FAILED
            return
        if status == NOT_RUN:
            self.not_run += 1
        else:
            self.skipped += 1
        if reason and reason not in self.reasons:
            self.reasons.append(reason)

    @property
    def total(self) -> int:
        return self.ran + self.skipped + self.not_run

    @property
    def status(self) -> str:
        """failed > skipped (nothing ran) > partial (some left out) > ok (all ran)."""
        if self.failed:
            return FAILED
        if self.ran == 0:
            return SKIPPED
        return PARTIAL if self.skipped or self.not_run else OK

    def summary(self, what: str) -> str:
        """E.g. ``ran 0 of 24 PTX kernel cases; 24 skipped: no CUDA GPU``."""
        text = f"ran {self.ran} of {self.total} {what}"
        left = [f"{n} {k}" for n, k in ((self.skipped, "skipped"), (self.not_run, "not run")) if n]
        if left:
            text += "; " + ", ".join(left)
            if self.reasons:
                text += ": " + "; ".join(self.reasons)
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"ran": self.ran, "failed": self.failed, "skipped": self.skipped, "not_run": self.not_run}


def tally(items: Iterable[Mapping[str, Any]]) -> Tally:
    """Count items that carry ``status`` (and ``reason`` when not run)."""
    t = Tally()
    for item in items:
        t.add(str(item.get("status", NOT_RUN)), str(item.get("reason") or ""))
    return t


def judge(status: str, counts: Tally, what: str) -> tuple[str, str]:
    """A check's status after its subject's counts: ``(status, reason to add)``.

    ``status`` is what the check itself concluded (``ok`` when nothing went wrong). An ``ok`` or
    ``partial`` check whose subject never ran becomes ``skipped``; an ``ok`` one with items left
    out becomes ``partial``. Worse statuses (failed, timeout) are kept.
    """
    if status not in (OK, PARTIAL):
        return status, ""
    if counts.status == FAILED:
        return FAILED, counts.summary(what)
    if counts.ran == 0:
        return SKIPPED, counts.summary(what) if counts.total else f"no {what} to run"
    if counts.status == PARTIAL:
        return PARTIAL, counts.summary(what)
    return status, ""

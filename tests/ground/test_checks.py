"""A check that ran nothing is never ok: the counts and the status rule every report uses."""

from __future__ import annotations

import pytest

from tdmi.checks import Tally, judge, tally


def _rows(*statuses: str) -> list[dict[str, str]]:
    return [{"status": s, "reason": "no CUDA GPU" if s == "skipped" else ""} for s in statuses]


@pytest.mark.parametrize(
    ("statuses", "status", "summary"),
    [
        (("ok", "ok"), "ok", "ran 2 of 2 cases"),
        (("ok", "skipped"), "partial", "ran 1 of 2 cases; 1 skipped: no CUDA GPU"),
        (("skipped", "skipped"), "skipped", "ran 0 of 2 cases; 2 skipped: no CUDA GPU"),
        (("ok", "not_run"), "partial", "ran 1 of 2 cases; 1 not run"),
        (("ok", "failed", "skipped"), "failed", "ran 2 of 3 cases; 1 skipped: no CUDA GPU"),
        ((), "skipped", "ran 0 of 0 cases"),
    ],
)
def test_status_follows_what_ran(statuses: tuple[str, ...], status: str, summary: str) -> None:
    t = tally(_rows(*statuses))
    assert t.status == status and t.summary("cases") == summary
    assert t.to_dict()["ran"] == statuses.count("ok") + statuses.count("failed")


def test_judge_never_lets_an_empty_check_be_ok() -> None:
    assert judge("ok", tally(_rows("skipped")), "kernel cases")[0] == "skipped"
    assert judge("ok", Tally(), "kernel cases") == ("skipped", "no kernel cases to run")
    assert judge("ok", tally(_rows("ok", "skipped")), "kernel cases")[0] == "partial"
    assert judge("ok", tally(_rows("ok")), "kernel cases") == ("ok", "")
    # A worse verdict of the check itself stands.
    assert judge("timeout", tally(_rows("ok")), "kernel cases") == ("timeout", "")
    assert judge("failed", tally(_rows("skipped")), "kernel cases") == ("failed", "")


def test_load_test_parity_of_zero_requests_is_not_checked() -> None:
    """Comparing nothing used to report ``ok`` (worst error 0.0 <= tolerance)."""
    from tdmi.serve.load_test import LoadTestOptions, check_parity

    opts = LoadTestOptions(url="127.0.0.1:1", parity_requests=0)
    parity = check_parity(opts, reference=None, io=("frames", [3, 3, 64, 48], "FP32", "heatmaps"))
    assert parity["checked"] is False and "nothing compared" in parity["note"]
    assert "ok" not in parity

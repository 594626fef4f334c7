"""Prints the fault and security table at the end of any run that included tests/faults."""

from __future__ import annotations

from typing import Any

import pytest

from tests.faults.faultlib import ROWS, FaultRow

_FAILED: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tests/faults/" in report.nodeid and report.failed and report.when == "call":
        _FAILED.append(report.nodeid.split("::", 1)[-1])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    failed = [FaultRow("FAILED", name, survived=False, note="see the failure above") for name in _FAILED]
    rows = list(ROWS) + failed
    if not rows:
        return
    write = terminalreporter.write_line
    terminalreporter.section("faults and bad input: what was injected and what survived")
    widths = (8, 72, 8, 8, 9, 9, 11)
    head = ("group", "fault", "injected", "survived", "bad input", "disturbed", "baseline")
    write("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    write("  ".join("-" * w for w in widths))
    for row in rows:
        disturbed = f"{row.disturbed} of {row.others}" if row.others else "-"
        cells = (
            row.group,
            row.fault[:72],
            str(row.injected),
            "yes" if row.survived else "NO",
            str(row.bad_inputs),
            disturbed,
            row.baseline,
        )
        write("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
    survived = [r for r in rows if r.survived]
    checked = [r for r in rows if r.baseline.startswith("ok")]
    faults = [r for r in rows if r.group != "fuzz"]
    fuzzed = sum(r.injected for r in rows if r.group == "fuzz")
    write("")
    write(
        f"faults injected: {sum(r.injected for r in faults)} in {len(faults)} cases (+ {fuzzed} fuzz "
        f"examples); survived: {len(survived)} of {len(rows)} cases"
    )
    write(f"bad inputs tried: {sum(r.bad_inputs for r in rows)}")
    write(
        f"other calls disturbed: {sum(r.disturbed for r in rows)} of {sum(r.others for r in rows)} "
        "checked (must be 0)"
    )
    write(
        f"memory and calls back to baseline: {len(checked)} cases checked, all ok"
        if checked
        else "memory and calls back to baseline: not checked in this run"
    )

"""The benchmark removes its run's files only when every call completed."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from bridge.tools.bench import run as bench


@pytest.fixture
def runs_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(bench, "print_table", lambda result: None)
    return tmp_path


def outcome(monkeypatch: pytest.MonkeyPatch, attempted: int, completed: int) -> None:
    def run_bench(run: Any) -> dict[str, Any]:
        (run.workdir / "sipp.err").write_text("call 7: timeout\n")
        return {"attempted": attempted, "completed": completed}

    monkeypatch.setattr(bench, "run_bench", run_bench)


def test_a_run_that_completed_every_call_leaves_nothing(
        runs_in: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outcome(monkeypatch, 10, 10)
    assert bench.main(["--calls", "10"]) == 0
    assert list(runs_in.iterdir()) == []


def test_a_run_that_lost_a_call_keeps_its_files_and_says_where(
        runs_in: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    outcome(monkeypatch, 10, 9)
    assert bench.main(["--calls", "10"]) == 1
    [kept] = list(runs_in.iterdir())
    assert (kept / "sipp.err").read_text() == "call 7: timeout\n"
    assert f"kept in {kept}" in capsys.readouterr().err


def test_a_run_that_stopped_early_keeps_its_files(runs_in: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def run_bench(run: Any) -> dict[str, Any]:
        (run.workdir / "loadbot.log").write_text("traceback\n")
        raise SystemExit("bench: the load bot did not start")

    monkeypatch.setattr(bench, "run_bench", run_bench)
    with pytest.raises(SystemExit):
        bench.main(["--calls", "10"])
    [kept] = list(runs_in.iterdir())
    assert (kept / "loadbot.log").exists()


def test_keep_is_still_honoured_when_every_call_completed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "print_table", lambda result: None)
    outcome(monkeypatch, 10, 10)
    assert bench.main(["--calls", "10", "--keep", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "sipp.err").exists()

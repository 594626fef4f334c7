"""The architecture's rules (scripts/check-layout) hold for this tree, and the check itself
catches each kind of break on a small tree made for it."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def _checker() -> ModuleType:
    path = REPO / "scripts" / "check-layout"
    loader = importlib.machinery.SourceFileLoader("check_layout", str(path))
    spec = importlib.util.spec_from_loader("check_layout", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_layout"] = module
    loader.exec_module(module)
    return module


def test_this_tree_keeps_the_rules_and_its_known_debts_only_shrink() -> None:
    checker = _checker()
    found = set(checker.check(REPO))
    assert found - checker.KNOWN_DEBTS == set(), "new breaks of the layout rules"
    assert checker.KNOWN_DEBTS - found == set(), "fixed: remove these from KNOWN_DEBTS"


def _write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_check_catches_circles_pjsua2_outside_sip_impure_core_and_long_files(tmp_path: Path) -> None:
    for package in ("bridge", "bridge/audio", "bridge/sip"):
        _write(tmp_path, f"{package}/__init__.py", "")
    _write(tmp_path, "bridge/a.py", "from bridge import b\n")
    _write(tmp_path, "bridge/b.py", "def f() -> None:\n    from bridge.a import x\n")
    _write(tmp_path, "bridge/media.py", "import pjsua2\n")
    _write(tmp_path, "bridge/sip/engine.py", "import pjsua2\n")
    _write(tmp_path, "bridge/audio/g711.py", "import asyncio\nfrom bridge import service\n")
    _write(tmp_path, "bridge/service.py", "")
    _write(tmp_path, "native/pipe.hpp", "int x;\n" * 601)
    found = _checker().check(tmp_path)
    assert found == [
        "cycle: bridge.a -> bridge.b -> bridge.a",
        "pjsua2 outside bridge/sip: bridge.media",
        "pure core imports I/O: bridge.audio.g711 -> asyncio",
        "pure core imports an edge module: bridge.audio.g711 -> bridge.service",
        "too long: native/pipe.hpp",
    ], found

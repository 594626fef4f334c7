"""`sip-ws-bridge install-service` into a staging root, and the units checked by systemd-analyze."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.errors import EXIT_CONFIG
from bridge.ops.install import LIMIT_NOFILE, install_service, referenced_variables, unit_text

REPO = Path(__file__).resolve().parents[2]
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None,
                                   reason="systemd-analyze is not installed (apt-get install systemd)")

PROFILE = """\
name: pbx
sip:
  listen: "0.0.0.0:5060"
  register: {registrar: "sip:pbx.example.com", username: "1001", password: "${SIP_PASSWORD}"}
bot:
  url: "wss://bot.example.com/s"
  headers: {Authorization: "Bearer ${BOT_TOKEN}", X-Env: "${DEPLOY:-prod}"}
recording: {enabled: true, dir: "${STATE_DIRECTORY:-/var/lib/sip-ws-bridge}/recordings"}
"""


def verify(unit_dir: Path, *names: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, "verify", *[str(unit_dir / n) for n in names]], capture_output=True,
                          text=True, timeout=60, check=False)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_repository_units_are_the_generated_ones() -> None:
    assert (REPO / "systemd" / "sip-ws-bridge.service").read_text() == unit_text(template=False)
    assert (REPO / "systemd" / "sip-ws-bridge@.service").read_text() == unit_text(template=True)


def test_unit_contents() -> None:
    text = unit_text(template=True, python="/opt/x/bin/python")
    lines = set(text.splitlines())
    for line in ("Type=notify", "Restart=on-failure", f"RestartPreventExitStatus={EXIT_CONFIG}",
                 "EnvironmentFile=/etc/sip-ws-bridge/%i.env", "User=sip-ws-bridge", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "CapabilityBoundingSet=",
                 "ExecStart=/opt/x/bin/python -m bridge run --profile /etc/sip-ws-bridge/%i.yaml",
                 "ExecReload=/bin/kill -HUP $MAINPID", "StateDirectory=sip-ws-bridge/%i",
                 f"LimitNOFILE={LIMIT_NOFILE}"):
        assert line in lines, line
    assert any(line.startswith("WatchdogSec=") for line in lines)
    assert LIMIT_NOFILE >= 256 + 4 * 1024  # room for the largest sip.max_calls
    assert "CAP_NET_BIND_SERVICE" not in "".join(line for line in lines if not line.startswith("#"))


@needs_analyze
def test_systemd_analyze_verify_accepts_both_units(tmp_path: Path) -> None:
    for template in (False, True):
        name = "sip-ws-bridge@.service" if template else "sip-ws-bridge.service"
        (tmp_path / name).write_text(unit_text(template=template, python=sys.executable))
    result = verify(tmp_path, "sip-ws-bridge.service", "sip-ws-bridge@pbx.service")
    assert result.returncode == 0 and result.stderr == "" and result.stdout == "", result.stderr
    # The check is real: a typo in a key is reported.
    (tmp_path / "broken.service").write_text(unit_text(template=False, python=sys.executable)
                                             .replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    assert "Unknown key" in verify(tmp_path, "broken.service").stderr


@needs_analyze
def test_install_into_a_staging_root(tmp_path: Path) -> None:
    source = tmp_path / "pbx.yaml"
    source.write_text(PROFILE.replace("0.0.0.0:5060", "0.0.0.0:506"))  # a port below 1024
    root = tmp_path / "root"
    result = install_service(str(source), name="pbx", prefix=str(root), python=sys.executable)
    etc = root / "etc" / "sip-ws-bridge"
    units = root / "etc" / "systemd" / "system"
    assert result.unit == "sip-ws-bridge@pbx.service"
    assert (etc / "pbx.yaml").read_text() == source.read_text() and mode(etc / "pbx.yaml") == 0o640
    env = etc / "pbx.env"
    assert mode(env) == 0o600
    assert [line for line in env.read_text().splitlines() if not line.startswith("#") and line] == \
        ["SIP_PASSWORD=", "BOT_TOKEN="]
    assert (root / "usr/lib/sysusers.d/sip-ws-bridge.conf").read_text().startswith("u sip-ws-bridge ")
    dropin = units / "sip-ws-bridge@pbx.service.d" / "bind-low-port.conf"
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in dropin.read_text()
    assert any("systemctl enable --now sip-ws-bridge@pbx.service" in step for step in result.next_steps)
    # The profile needed secrets that are not set here: installed, with a warning naming one.
    assert any("SIP_PASSWORD" in w for w in result.warnings) or os.environ.get("SIP_PASSWORD")
    # The unit with its drop-in passes systemd's own check.
    check = tmp_path / "check"
    check.mkdir()
    (check / "sip-ws-bridge@.service").write_text((units / "sip-ws-bridge@.service").read_text()
                                                  + "\n" + dropin.read_text())
    verified = verify(check, "sip-ws-bridge@pbx.service")
    assert verified.returncode == 0 and verified.stderr == "", verified.stderr


def test_reinstall_keeps_secrets_and_edited_profiles_unless_forced(tmp_path: Path) -> None:
    source = tmp_path / "bridge.yaml"
    source.write_text(PROFILE.replace("${SIP_PASSWORD}", "pw").replace("${BOT_TOKEN}", "tok"))
    root = tmp_path / "root"
    first = install_service(str(source), prefix=str(root), python="/opt/sip-ws-bridge/.venv/bin/python")
    assert first.unit == "sip-ws-bridge.service" and first.warnings == []
    etc = root / "etc" / "sip-ws-bridge"
    assert (root / "etc/systemd/system/sip-ws-bridge.service").read_text() == unit_text(template=False)
    (etc / "sip-ws-bridge.env").write_text("SECRET=kept\n")
    source.write_text(source.read_text().replace("pbx", "pbx2"))
    again = install_service(str(source), prefix=str(root), python="/opt/sip-ws-bridge/.venv/bin/python")
    assert (etc / "sip-ws-bridge.env").read_text() == "SECRET=kept\n"
    assert "pbx2" not in (etc / "sip-ws-bridge.yaml").read_text()
    assert any("exists and differs" in w for w in again.warnings)
    install_service(str(source), prefix=str(root), python="/opt/sip-ws-bridge/.venv/bin/python", force=True)
    assert "pbx2" in (etc / "sip-ws-bridge.yaml").read_text()
    assert "pbx2" not in (etc / "sip-ws-bridge.yaml.bak").read_text()


def test_a_python_under_home_gets_a_drop_in(tmp_path: Path) -> None:
    source = tmp_path / "p.yaml"
    source.write_text(PROFILE.replace("${SIP_PASSWORD}", "pw").replace("${BOT_TOKEN}", "tok"))
    result = install_service(str(source), prefix=str(tmp_path / "root"), python="/home/me/venv/bin/python")
    dropin = tmp_path / "root/etc/systemd/system/sip-ws-bridge.service.d/python-in-home.conf"
    assert "ProtectHome=read-only" in dropin.read_text()
    assert any("home directory" in w for w in result.warnings)


def test_cli_refuses_a_bad_profile_with_78_and_installs_nothing(tmp_path: Path) -> None:
    source = tmp_path / "bad.yaml"
    source.write_text("sip: {listen: nope}\nbot: {url: 'ws://x/'}\n")
    root = tmp_path / "root"
    result = subprocess.run([sys.executable, "-m", "bridge", "install-service", "--profile", str(source),
                             "--prefix", str(root)], capture_output=True, text=True, cwd=REPO, timeout=60,
                            check=False)
    assert result.returncode == EXIT_CONFIG
    assert "(key sip.listen)" in result.stderr and "nothing installed" in result.stderr
    assert not root.exists()


def test_referenced_variables() -> None:
    assert referenced_variables("${A} ${B:-x} $${C} ${A} ${file:/x} ${D}") == ["A", "D"]

"""PJSIP's own libFuzzer targets (SIP, SDP, multipart, URI, RTP, RTCP parsers), built against the
PJSIP the bridge uses (native/build-fuzzers.sh: same source, config_site.h and fixes, with
AddressSanitizer), each run for a bounded time from its seed corpus. Slow: the build alone takes
several minutes. SIPWSB_PJSIP_FUZZ_SECONDS sets the time per target (default 60)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SECONDS = int(os.environ.get("SIPWSB_PJSIP_FUZZ_SECONDS", "60"))
TARGETS = ("fuzz-sip", "fuzz-sdp", "fuzz-multipart", "fuzz-uri", "fuzz-rtp", "fuzz-rtcp")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def fuzzers() -> Path:
    build = subprocess.run(["bash", str(REPO / "native" / "build-fuzzers.sh")], capture_output=True,
                           text=True, timeout=3000, check=False)
    assert build.returncode == 0, build.stderr[-4000:]
    return Path(build.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("target", TARGETS)
def test_pjsip_parser_survives_its_fuzzer(fuzzers: Path, target: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    seeds = [str(p) for p in [fuzzers / f"{target}.seed"] if p.is_dir()]
    run = subprocess.run(
        [str(fuzzers / target), str(corpus), *seeds, f"-max_total_time={SECONDS}", "-rss_limit_mb=2048",
         f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"],
        capture_output=True, text=True, timeout=SECONDS + 600, check=False)
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "leak-", "timeout-")))
    assert run.returncode == 0 and not crashes, f"{crashes}\n{run.stderr[-4000:]}"

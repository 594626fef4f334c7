"""Scale-out behind a real SIP load balancer: kamailio's dispatcher (deploy/kamailio/front.cfg)
in front of two bridge instances on two test hosts (network namespaces). Calls are spread over
both; when one instance is killed, new calls go to the other."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests import netns
from tests.botlib import TestBot
from tests.bridgelib import REPO, BridgeProcess, free_port
from tests.peerlib import SIPP_AUDIO, PeerProcess, run_sipp

pytestmark = [
    pytest.mark.interop,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not netns.available(), reason="needs root and ip netns"),
]


def start_front(workdir: Path, port: int, listen_ips: list[str], targets: list[str]) -> PeerProcess:
    dispatcher = workdir / "dispatcher.list"
    dispatcher.write_text("".join(f"1 {t}\n" for t in targets))
    template = (REPO / "deploy" / "kamailio" / "front.cfg").read_text()
    listens = "\n".join(f"listen=udp:{ip}:{port}" for ip in listen_ips[1:])
    cfg = template.replace("@@LISTEN@@", f"{listen_ips[0]}:{port}").replace(
        "@@ADVERTISE@@", f"{listen_ips[0]}:{port}").replace("@@DISPATCHER@@", str(dispatcher))
    cfg = cfg.replace("\nmhomed=1\n", f"\n{listens}\nmhomed=1\n")
    path = workdir / "front.cfg"
    path.write_text(cfg)
    check = subprocess.run(["kamailio", "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    run_dir = Path(f"/tmp/swb-front-{os.getpid()}")
    run_dir.mkdir(exist_ok=True)
    return PeerProcess(["kamailio", "-f", str(path), "-DD", "-E", "-Y", str(run_dir)], workdir / "front.log",
                       cwd=workdir, max_seconds=200)


def calls_on(bridge: BridgeProcess) -> int:
    return len(bridge.summaries())


def test_dispatcher_spreads_calls_and_fails_over_when_an_instance_dies(tmp_path: Path) -> None:
    hosts = [netns.TestHost.create(1), netns.TestHost.create(2)]
    bridges: list[BridgeProcess] = []
    front: PeerProcess | None = None
    try:
        with TestBot(host="0.0.0.0") as bot:  # reachable from both test hosts
            for host in hosts:
                overrides = {"sip": {"listen": f"{host.ns_ip}:5060",
                                     "allow_from": ["10.231.0.0/16", "127.0.0.0/8"]}}
                bridge = BridgeProcess(tmp_path, f"ws://{host.peer_ip}:{bot.port}/bot", overrides,
                                       exec_prefix=host.exec_prefix)
                bridges.append(bridge.start())
            port = free_port()
            front = start_front(tmp_path, port, ["127.0.0.1"] + [h.peer_ip for h in hosts],
                                [f"sip:{h.ns_ip}:5060" for h in hosts])
            time.sleep(3)  # the first OPTIONS round marks both instances up
            keys = {"audio": SIPP_AUDIO["pcmu"]}
            first = run_sipp(tmp_path, f"127.0.0.1:{port}", "uac_media_dtmf", keys=keys, duration_ms=300,
                             calls=6, rate=3, limit=6, extra_args=["-mi", hosts[0].peer_ip])
            assert first.rc == 0, first.errors
            for bridge in bridges:
                bridge.wait_summaries(3)
            assert [calls_on(b) for b in bridges] == [3, 3]  # round robin

            assert bridges[0].proc is not None
            bridges[0].proc.send_signal(signal.SIGKILL)
            bridges[0].proc.wait(10)
            time.sleep(5)  # OPTIONS probing takes the dead instance out of rotation
            second = run_sipp(tmp_path, f"127.0.0.1:{port}", "uac_media_dtmf", keys=keys, duration_ms=300,
                              calls=4, rate=2, limit=4, extra_args=["-mi", hosts[0].peer_ip])
            assert second.rc == 0, second.errors
            bridges[1].wait_summaries(7)
            assert calls_on(bridges[1]) == 7
            assert len([s for s in bot.streams if s.of("stop")]) >= 10
    finally:
        if front is not None:
            front.stop()
        for bridge in bridges:
            bridge.stop()
        for host in hosts:
            host.delete()


def test_the_registering_instance_registers_the_front_address(tmp_path: Path) -> None:
    """Behind a front, one instance registers with sip.register.contact = the front, so the PBX
    sends every call to the front and never forks it to several instances."""
    from tests.peerlib import Kamailio

    kam_port, front_port = free_port(), free_port()
    kam = Kamailio.start(tmp_path, kam_port)
    try:
        with TestBot() as bot:
            overrides = {"sip": {"register": {
                "registrar": f"sip:127.0.0.1:{kam_port}", "username": "bridge", "password": "bridgepass",
                "contact": f"sip:bridge@127.0.0.1:{front_port}"}}}
            with BridgeProcess(tmp_path, bot.url, overrides) as bridge:
                contacts = kam.wait_registered("bridge", timeout=10)
                assert bridge.sip_port
        assert len(contacts) == 1
        assert f"127.0.0.1:{front_port}" in contacts[0]
    finally:
        kam.stop()

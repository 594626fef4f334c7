"""Test hosts: network namespaces this test run creates, joined to the current one by veth pairs.

Each namespace gets 10.231.N.2/30 on its side and 10.231.N.1/30 on ours, with a default route
back to us; only these addresses (and loopback) are ever used, and everything is deleted after.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass


def available() -> bool:
    return os.geteuid() == 0 and subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                 check=False).returncode == 0


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass
class TestHost:
    __test__ = False
    name: str
    index: int

    @property
    def ns_ip(self) -> str:  # the host's address
        return f"10.231.{self.index}.2"

    @property
    def peer_ip(self) -> str:  # our address as seen from the host
        return f"10.231.{self.index}.1"

    @property
    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    @classmethod
    def create(cls, index: int) -> TestHost:
        name = f"sipwsb-h{index}-{os.getpid()}"
        host = cls(name, index)
        ours, theirs = f"swb{index}a{os.getpid() % 10000}", f"swb{index}b{os.getpid() % 10000}"
        host.delete()
        _ip("netns", "add", name)
        _ip("link", "add", ours, "type", "veth", "peer", "name", theirs)
        _ip("link", "set", theirs, "netns", name)
        _ip("addr", "add", f"{host.peer_ip}/30", "dev", ours)
        _ip("link", "set", ours, "up")
        for args in (("link", "set", "lo", "up"), ("addr", "add", f"{host.ns_ip}/30", "dev", theirs),
                     ("link", "set", theirs, "up"), ("route", "add", "default", "via", host.peer_ip)):
            _ip("netns", "exec", name, "ip", *args)
        host.veth = ours  # type: ignore[attr-defined]
        return host

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)
        veth = getattr(self, "veth", None)
        if veth:
            subprocess.run(["ip", "link", "del", veth], capture_output=True, check=False)

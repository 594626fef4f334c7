"""The `sip-ws-bridge` command line. Exit codes: 0 ok, 1 failure, 2 usage, 69 unavailable, 78 bad profile."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bridge import __version__
from bridge.errors import EXIT_CONFIG, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, BridgeError, ConfigError
from bridge.logs import setup_logging

if TYPE_CHECKING:
    from bridge.config import Profile

log = logging.getLogger("bridge")


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sip-ws-bridge",
        description="Bridge SIP calls to voice bots over WebSockets (AgentStream protocol).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the bridge in the foreground until SIGTERM/SIGINT")
    run.add_argument("--profile", required=True, help="SIP profile (YAML)")
    check = sub.add_parser("check", help="validate a profile and print it resolved, secrets redacted")
    check.add_argument("--profile", required=True, help="SIP profile (YAML)")
    echo = sub.add_parser("echo-bot", help="run the reference AgentStream echo bot")
    echo.add_argument("--listen", type=_host_port, default=("127.0.0.1", 8765), metavar="HOST:PORT",
                      help="address to listen on (default 127.0.0.1:8765)")
    sub.add_parser("demo", help="a complete local call: bridge + echo bot + test caller")
    return parser


def _config_error(exc: ConfigError, path: str) -> int:
    where = f" (key {exc.key})" if exc.key else ""
    print(f"sip-ws-bridge: bad profile {path}{where}: {exc.message}", file=sys.stderr)
    return EXIT_CONFIG


def _load(path: str) -> Profile | int:
    """The profile, or the exit code after saying what is wrong with it."""
    from bridge.config import load_profile

    try:
        return load_profile(path)
    except ConfigError as exc:
        return _config_error(exc, path)


def cmd_check(path: str) -> int:
    from bridge.config import render_profile

    profile = _load(path)
    if isinstance(profile, int):
        return profile
    text = render_profile(profile)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    for warning in profile.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"profile {path} is valid", file=sys.stderr)
    return EXIT_OK


def cmd_run(path: str) -> int:
    profile = _load(path)
    if isinstance(profile, int):
        return profile
    setup_logging(profile.logging.level, profile.logging.format)
    for warning in profile.warnings:
        log.warning("profile: %s", warning)
    try:
        from bridge.service import Bridge
    except ImportError as exc:
        log.error("cannot load the SIP stack (%s); install with scripts/setup.sh", exc)
        return EXIT_UNAVAILABLE
    try:
        asyncio.run(Bridge(profile).run())
    except BridgeError as exc:
        log.error("%s", exc)
        return exc.exit_code
    return EXIT_OK


def cmd_echo_bot(host: str, port: int) -> int:
    from bridge.echobot import run_echo_bot

    setup_logging("info", "auto")
    try:
        asyncio.run(run_echo_bot(host, port))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc.strerror or exc)
        return EXIT_UNAVAILABLE
    return EXIT_OK


def cmd_demo() -> int:
    from bridge.demo import main as demo_main

    setup_logging("warning", "text")
    return demo_main()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code not in (0, None) else EXIT_OK
    if args.command == "check":
        return cmd_check(args.profile)
    if args.command == "run":
        return cmd_run(args.profile)
    if args.command == "echo-bot":
        host, port = args.listen
        return cmd_echo_bot(host, port)
    if args.command == "demo":
        return cmd_demo()
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE

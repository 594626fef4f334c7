"""The `sip-ws-bridge` command line. Exit codes: 0 ok, 1 failure, 2 usage, 69 unavailable, 78 bad profile."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
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
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
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
    bench = sub.add_parser("bench", add_help=False,
                           help="load benchmark: N calls from sipp through the bridge to a load bot "
                                "(sip-ws-bridge bench --help)")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    status = sub.add_parser("status", help="live calls and counters of a running bridge, refreshed like top")
    status.add_argument("--control", type=_host_port, metavar="HOST:PORT",
                        help="the bridge's control.listen (default 127.0.0.1:8780, or read from --profile)")
    status.add_argument("--profile", help="read control.listen from this profile")
    status.add_argument("--once", action="store_true", help="print one snapshot and exit")
    status.add_argument("--json", action="store_true", help="print the raw JSON of /status")
    status.add_argument("--interval", type=float, default=2.0, help="seconds between redraws (default 2)")
    call = sub.add_parser("call", help="place an outbound call through a running bridge's API (api.listen)")
    call.add_argument("--profile", required=True,
                      help="the running bridge's profile (api.listen, api.auth_token)")
    call.add_argument("--to", required=True, help="the number (digits, a leading +) or sip: URI to dial")
    call.add_argument("--from", dest="from_", help="the caller id (default outbound.caller_id)")
    call.add_argument("--bot-url", help="the bot's ws:// or wss:// URL (default bot.url)")
    call.add_argument("--wait", action="store_true",
                      help="follow the call, one line per status; exit 0 if answered, 1 if not")
    call.add_argument("--token", help="the API token when the profile's api.auth_token is an unset ${VAR} "
                                      "(or set SIP_WS_BRIDGE_API_TOKEN)")
    install = sub.add_parser("install-service",
                             help="install as a systemd service (unit, profile, secrets file)")
    install.add_argument("--profile", required=True, help="the profile to install")
    install.add_argument("--name",
                         help="instance name: installs sip-ws-bridge@NAME (default: sip-ws-bridge.service)")
    install.add_argument("--prefix", default="/",
                         help="install under this root (default /; another directory stages the files)")
    install.add_argument("--python", help="the Python with the bridge installed (default: this one)")
    install.add_argument("--force", action="store_true", help="replace an existing, different profile")
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
        asyncio.run(Bridge(profile, profile_path=path).run())
    except BridgeError as exc:
        log.error("%s", exc)
        return exc.exit_code
    return EXIT_OK


def cmd_call(path: str, to: str, from_: str | None, bot_url: str | None, wait: bool,
             token: str | None) -> int:
    from bridge.config import load_profile
    from bridge.ops.call_command import api_address, place_call

    token = token or os.environ.get("SIP_WS_BRIDGE_API_TOKEN")
    try:
        profile = load_profile(path)
    except ConfigError as exc:
        if token is None or not exc.key.startswith("api.auth_token"):
            return _config_error(exc, path)
        profile = None  # the token comes from the command line: the listener from the file itself
    try:
        base_url, profile_token = api_address(path, profile)
    except ConfigError as exc:
        return _config_error(exc, path)
    token = token or profile_token
    if token is None:
        print(f"sip-ws-bridge: {path} has no api.auth_token; pass --token or set SIP_WS_BRIDGE_API_TOKEN",
              file=sys.stderr)
        return EXIT_USAGE
    body: dict[str, object] = {"to": to}
    if from_:
        body["from"] = from_
    if bot_url:
        body["bot_url"] = bot_url

    def warn(text: str) -> None:
        print(f"sip-ws-bridge: {text}", file=sys.stderr)

    return place_call(base_url, token, body, wait=wait, say=lambda line: print(line, flush=True), warn=warn)


def cmd_echo_bot(host: str, port: int) -> int:
    from bridge.tools.echobot import run_echo_bot

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
    from bridge.tools.demo import main as demo_main

    setup_logging("warning", "text")
    return demo_main()


def cmd_status(control: tuple[str, int] | None, profile_path: str | None, once: bool, as_json: bool,
               interval: float) -> int:
    from bridge.config import DEFAULT_CONTROL_LISTEN
    from bridge.ops.status import run_status

    host, port = control or DEFAULT_CONTROL_LISTEN
    if control is None and profile_path is not None:
        profile = _load(profile_path)
        if isinstance(profile, int):
            return profile
        if profile.control.listen_host is None:
            print(f"sip-ws-bridge: {profile_path} turns the control listener off (control.listen: null); "
                  "status needs it", file=sys.stderr)
            return EXIT_USAGE
        host, port = profile.control.listen_host, profile.control.listen_port
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    return run_status(host, port, once=once, as_json=as_json, interval=max(interval, 0.2))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # The benchmark has its own options; argparse would take them for the top level's.
        from bridge.tools.bench.run import main as bench_main

        return bench_main(argv[1:])
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
    if args.command == "status":
        return cmd_status(args.control, args.profile, args.once, args.json, args.interval)
    if args.command == "call":
        return cmd_call(args.profile, args.to, args.from_, args.bot_url, args.wait, args.token)
    if args.command == "install-service":
        from bridge.ops.install import cmd_install_service

        return cmd_install_service(args.profile, args.name, args.prefix, args.python, args.force)
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE

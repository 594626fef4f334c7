"""`sip-ws-bridge call`: place one outbound call through a running bridge's API, and with `--wait`
follow it to its end, one line per status.

Exit codes: 0 the call was placed (with --wait: answered), 1 it was refused or not answered (busy,
no-answer, failed, canceled), 69 the bridge's API cannot be reached.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from bridge.config import Profile
from bridge.errors import EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, ConfigError

__all__ = ["api_address", "place_call"]

_POLL_S = 0.05  # the API is local: every 50 ms catches even a short ring


async def _place(
    base_url: str,
    token: str,
    body: dict[str, Any],
    wait: bool,
    say: Callable[[str], None],
    warn: Callable[[str], None],
) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:
        async with http.post(f"{base_url}/v1/calls", json=body) as response:
            doc = await response.json(content_type=None)
            if response.status not in (200, 201):
                error = doc.get("error", {}) if isinstance(doc, dict) else {}
                warn(f"refused ({response.status} {error.get('code', '?')}): {error.get('message', doc)}")
                return EXIT_FAILURE
        sid = doc["call_sid"]
        if not wait:
            say(json.dumps(doc))
            return EXIT_OK
        say(f"{sid}: {doc['status']}")
        last = doc["status"]
        while doc["status"] not in ("completed", "busy", "no-answer", "failed", "canceled"):
            await asyncio.sleep(_POLL_S)
            async with http.get(f"{base_url}/v1/calls/{sid}") as response:
                if response.status != 200:
                    warn(f"the bridge no longer knows call {sid} ({response.status})")
                    return EXIT_FAILURE
                doc = await response.json(content_type=None)
            status = doc["status"]
            if status != last and status in ("ringing", "in-progress"):
                say(status)
            last = status
        say(f"completed ({doc['status']}, {doc['duration']:g} s, {doc['end_reason']})")
        return EXIT_OK if doc.get("answered_at") else EXIT_FAILURE


def place_call(
    base_url: str,
    token: str,
    body: dict[str, Any],
    *,
    wait: bool,
    say: Callable[[str], None] = print,
    warn: Callable[[str], None] = print,
) -> int:
    """Place the call described by `body` (the API's POST /v1/calls fields) and report it."""
    try:
        return asyncio.run(_place(base_url.rstrip("/"), token, body, wait, say, warn))
    except (aiohttp.ClientConnectionError, TimeoutError) as exc:
        warn(
            f"cannot reach the bridge's API at {base_url}: {exc or type(exc).__name__} (is the bridge "
            "running with api.listen set?)"
        )
        return EXIT_UNAVAILABLE


def api_address(path: str, profile: Profile | None) -> tuple[str, str | None]:
    """The bridge's API base URL and token from its profile; without a validated profile (its token
    is an unset ${VAR}), the listener is read from the file as written."""
    if profile is not None:
        api = profile.api
        if api.listen_host is None:
            raise ConfigError("api.listen", "is not set: this bridge has no call API")
        scheme = "https" if api.tls is not None else "http"
        host = "127.0.0.1" if api.listen_host in ("0.0.0.0", "") else api.listen_host
        token = api.auth_token.reveal() if api.auth_token else None
        return f"{scheme}://{host}:{api.listen_port}", token
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    api_raw = data.get("api") if isinstance(data, dict) else None
    listen = api_raw.get("listen") if isinstance(api_raw, dict) else None
    if not isinstance(listen, str) or ":" not in listen:
        raise ConfigError("api.listen", "is not set: this bridge has no call API")
    host, _, port = listen.rpartition(":")
    scheme = "https" if isinstance(api_raw, dict) and api_raw.get("tls") else "http"
    return f"{scheme}://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}", None

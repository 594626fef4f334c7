"""Test-only fault injection: Python imports this at start-up when this directory is on PYTHONPATH.

SIPWSB_TEST_HANG_LOOP="AFTER:SECONDS": AFTER seconds into asyncio.run(), a callback blocks the
event loop for SECONDS (time.sleep on the loop thread) while every other thread runs on. The
bridge's systemd watchdog pings must stop for that long.
"""

from __future__ import annotations

import os

_SPEC = os.environ.get("SIPWSB_TEST_HANG_LOOP")
if _SPEC:
    import asyncio
    import time
    from collections.abc import Coroutine
    from typing import Any

    _after, _seconds = (float(part) for part in _SPEC.split(":"))
    _run = asyncio.run

    def _hanging_run(main: Coroutine[Any, Any, Any], **kwargs: Any) -> Any:
        async def wrapped() -> Any:
            asyncio.get_running_loop().call_later(_after, time.sleep, _seconds)
            return await main

        return _run(wrapped(), **kwargs)

    asyncio.run = _hanging_run

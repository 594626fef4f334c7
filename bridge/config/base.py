"""What the rest of the package builds on: `Secret`, `RegisterSettings`, ``REDACTED`` and the sample
rates a bot URL may ask for.

They are apart from `model` so that `guard`, `tap` and `boturl` can import them at the top while
`model` imports the guard and tap dataclasses: no import circle.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Final

REDACTED: Final = "***"
SAMPLE_RATES: Final = (8000, 16000, 24000)
DEFAULT_SAMPLE_RATE: Final = 8000


# --------------------------------------------------------------------------- secrets


class Secret:
    """A string that never shows itself: ``repr`` is ``'***'`` and ``str`` is ``***``.

    Call :meth:`reveal` at the one place the real value is needed.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"'{REDACTED}'"

    def __str__(self) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return hmac.compare_digest(self._value.encode(), other._value.encode())
        return NotImplemented

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)


# --------------------------------------------------------------------------- the schema: sip.register


@dataclass(frozen=True, slots=True)
class RegisterSettings:
    registrar: str
    username: str
    password: Secret
    realm: str = "*"
    expires: int = 300
    identity: str = ""
    outbound_proxy: str | None = None
    # Contact to register instead of this instance's own address: the front (load balancer)
    # address when several instances share one SIP identity (deploy/kamailio/front.cfg).
    contact: str | None = None

#!/usr/bin/env bash
# The README's first command: install what is needed, then run the self-contained demo
# (bridge + built-in echo bot + a test call). Exits 0 when the round trip worked.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh run
exec .venv/bin/sip-ws-bridge demo

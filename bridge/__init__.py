"""sip-ws-bridge: a self-hosted SIP-to-WebSocket bridge for voice AI bots (AgentStream protocol)."""

__version__ = "0.1.0"

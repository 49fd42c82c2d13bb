"""Outbound HTTP: the one guarded client for every URL a user can influence
(PSA origins, fetch gateways, later CCIP-read and status lists), and the
multiaddr <-> URL conversions for HTTP peers."""
from .client import (
    GuardedClient,
    OutboundError,
    OutboundRefused,
    OutboundResponse,
    OutboundTimeout,
    OutboundTooLarge,
    address_refusal,
)
from .multiaddr import HttpTarget, http_target, is_http_url, multiaddr_to_http, node_multiaddr, url_to_multiaddr

__all__ = [
    "GuardedClient",
    "OutboundError",
    "OutboundRefused",
    "OutboundResponse",
    "OutboundTimeout",
    "OutboundTooLarge",
    "address_refusal",
    "HttpTarget",
    "http_target",
    "is_http_url",
    "multiaddr_to_http",
    "node_multiaddr",
    "url_to_multiaddr",
]

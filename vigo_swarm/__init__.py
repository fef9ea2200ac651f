"""vigo_swarm — the P2P substrate: discovery, the mTLS peer channel, peers.

Public surface (import from here, not from the private modules):
"""

from . import http11, pki
from .announce import AnnounceError, Announcement
from .discovery import DiscoveryConfig
from .node import NodeIdentity, ServerHint, SwarmConfig, SwarmNode
from .peers import PeerView, TableConfig

__all__ = [
    "AnnounceError",
    "Announcement",
    "DiscoveryConfig",
    "NodeIdentity",
    "PeerView",
    "ServerHint",
    "SwarmConfig",
    "SwarmNode",
    "TableConfig",
    "http11",
    "pki",
]

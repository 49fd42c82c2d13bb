"""The embedded storage engine: blocks on local disk, no IPFS daemon."""
from .blockstore import CorruptBlock
from .engine import EmbeddedEngine

__all__ = ["EmbeddedEngine", "CorruptBlock"]

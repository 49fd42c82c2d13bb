"""Names that point to content: IPNS records, DNSLink, later ENS, behind one
resolver (resolver.py) that the gateway's /ipns/ paths and named origins use."""
from .resolver import (
    InvalidName,
    NameLoop,
    NameNotFound,
    NameSystem,
    NameUnavailable,
    NamingError,
    Resolution,
    ResolvedPath,
    Resolver,
)

__all__ = ["InvalidName", "NameLoop", "NameNotFound", "NameSystem", "NameUnavailable", "NamingError", "Resolution",
           "ResolvedPath", "Resolver"]

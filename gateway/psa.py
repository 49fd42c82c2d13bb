"""IPFS Pinning Services API v1.0.0 under /psa (placeholder; being written)."""
from aiohttp import web


def setup(app: web.Application) -> None:
    pass

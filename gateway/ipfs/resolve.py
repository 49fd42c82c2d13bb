"""Content path resolution for every response format, with its HTTP errors."""
from __future__ import annotations

from storage import unixfs

from ..errors import HTTPError
from .headers import GatewayRequest


async def resolve_path(req: GatewayRequest, get_block) -> unixfs.Resolved:
    try:
        return await unixfs.resolve(get_block, req.root, req.segments)
    except (unixfs.PathNotFound, unixfs.NotTraversable) as exc:
        raise path_error(req, exc) from None


def path_error(req: GatewayRequest, exc: Exception) -> HTTPError:
    """The answer for a path that is not in the DAG."""
    if isinstance(exc, unixfs.PathNotFound):
        return HTTPError(404, "not_found", f"no link named {str(exc)!r} under {req.content_path}")
    if isinstance(exc, unixfs.NotTraversable):  # a path through a file: not in the DAG (404, as boxo)
        return HTTPError(404, "not_found", str(exc))
    return HTTPError(400, "invalid_path", str(exc))

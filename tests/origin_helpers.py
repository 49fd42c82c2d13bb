"""The origin routing for tests of what content origins change (`_redirects`,
DNSLink hosts): the node's own (gateway/origins.py) when it has one, else this
stand-in, which does what the tests need of it:

* `Host: {cid}.ipfs.localhost` -> /ipfs/{cid}/{path}, a subdomain origin;
* `Host: {label}.ipns.localhost` -> /ipns/{name}/{path}, the label decoded as the
  subdomain gateway spec inlines DNSLink names (`en-wikipedia--on--ipfs-org` ->
  `en.wikipedia-on-ipfs.org`);
* `Host: 127.0.0.1` or `localhost`: the plain path gateway, untouched;
* any other Host with a dot: a DNSLink gateway, -> /ipns/{host}/{path}.

Each sets CONTENT_ORIGIN on the request before the /ipfs/ or /ipns/ handler runs."""
from __future__ import annotations

import pytest
from aiohttp import web
from yarl import URL

from gateway.app import create_app
from gateway.content_origin import CONTENT_ORIGIN, ContentOrigin
from gateway.ipfs.handler import handle_ipfs, handle_ipns
from gateway.keys import STORE
from tests.conftest import make_config

PATH_GATEWAY_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def decode_dnslink_label(label: str) -> str:
    """The inlined form of a DNSLink name back to the name ("--" is "-", "-" is ".")."""
    return ".".join(part.replace("\x00", "-") for part in label.replace("--", "\x00").split("-"))


def split_host(host: str) -> str:
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() and not name.endswith(":") else host


def real_routing(app: web.Application) -> bool:
    """Whether the node routes by Host itself (gateway/origins.py): then the stand-in stays out."""
    try:
        from gateway.origins import OriginApplication
    except ImportError:
        return False
    return isinstance(app, OriginApplication)


@web.middleware
async def test_origins(request: web.Request, handler):
    if request.get(CONTENT_ORIGIN) is not None:  # the node's own origin routing (gateway/origins.py) did it
        return await handler(request)
    host = split_host(request.host or "").lower()
    if request.get(CONTENT_ORIGIN) is not None or host in PATH_GATEWAY_HOSTS or "." not in host:
        return await handler(request)
    labels = host.split(".")
    if len(labels) >= 3 and labels[1] in ("ipfs", "ipns") and ".".join(labels[2:]) == "localhost":
        namespace, root, kind = labels[1], labels[0], "subdomain"
        if namespace == "ipns" and "-" in root and not root.startswith(("k51", "bafz")):
            root = decode_dnslink_label(root)
    else:
        namespace, root, kind = "ipns", host, "dnslink"
    request[CONTENT_ORIGIN] = ContentOrigin(kind, namespace, root, request.host)
    url = URL.build(path=f"/{namespace}/{root}" + request.rel_url.raw_path,
                    query_string=request.rel_url.raw_query_string, encoded=True)
    inner = request.clone(rel_url=url)
    return await (handle_ipfs if namespace == "ipfs" else handle_ipns)(inner)


@pytest.fixture
def origin_node(aiohttp_client, tmp_path, request):
    """origin_node(engine="embedded", **config_overrides): a node behind test_origins."""
    made = []

    async def factory(engine: str = "embedded", **overrides):
        if engine == "kubo":
            overrides.setdefault("storage__kubo_api", request.getfixturevalue("kubo").api_url)
        overrides.setdefault("storage__engine", engine)
        config = make_config(tmp_path / f"o{len(made)}", **overrides)
        app = create_app(config)
        if not real_routing(app):
            app.middlewares.append(test_origins)
        client = await aiohttp_client(app)
        store = app[STORE]
        client.token = await store.run(store.create_token, "tester")
        client.auth = {"Authorization": f"Bearer {client.token}"}
        client.config = config
        made.append(client)
        return client

    return factory

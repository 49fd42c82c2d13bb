"""Shared fixtures: a real Kubo daemon per session, a Hearth app per test."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.app import create_app  # noqa: E402
from gateway.config import load_config  # noqa: E402
from gateway.keys import STORE  # noqa: E402
from tests.support.kubo import KuboDaemon  # noqa: E402


@pytest.fixture(scope="session")
def kubo():
    daemon = KuboDaemon().start()
    yield daemon
    daemon.cleanup()


def make_config(tmp_path: Path, **overrides):
    config = load_config(None, env={})
    config.set("server", "data_dir", str(tmp_path / "data"))
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        config.set(section, key, value)
    return config


ENGINES = ["kubo", "embedded"] if os.environ.get("HEARTH_TEST_ENGINES") is None else os.environ["HEARTH_TEST_ENGINES"].split(",")


@pytest.fixture
def node_factory(aiohttp_client, tmp_path, request):
    """Build a client for a Hearth app: node_factory(engine="kubo", **config_overrides)."""
    made = []

    async def factory(engine: str = "kubo", **overrides):
        if engine == "kubo":
            k = request.getfixturevalue("kubo")
            overrides.setdefault("storage__kubo_api", k.api_url)
        overrides.setdefault("storage__engine", engine)
        config = make_config(tmp_path / f"n{len(made)}", **overrides)
        app = create_app(config)
        client = await aiohttp_client(app)
        store = app[STORE]
        client.token = await store.run(store.create_token, "tester")
        client.auth = {"Authorization": f"Bearer {client.token}"}
        client.config = config
        made.append(client)
        return client

    return factory


@pytest.fixture
async def node(node_factory):
    return await node_factory("kubo")


@pytest.fixture
def anvil():
    """A fresh anvil chain on a free loopback port (tests/support/anvil.py), stopped after."""
    from tests.support.anvil import Anvil

    chain = Anvil().start()
    yield chain
    chain.cleanup()


@pytest.fixture
def anvil_factory():
    """anvil_factory(state_path=..., chain_id=..., args=[...]) -> a started Anvil; all stopped after."""
    from tests.support.anvil import Anvil

    made = []

    def factory(**kwargs):
        chain = Anvil(**kwargs).start()
        made.append(chain)
        return chain

    yield factory
    for chain in made:
        chain.cleanup()

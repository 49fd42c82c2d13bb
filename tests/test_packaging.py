"""`pip install .` ships every package of the node (pyproject lists them by hand)."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP = ("gateway", "storage", "identity", "naming", "outbound", "chain")


def test_every_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {str(p.parent.relative_to(ROOT)).replace("/", ".")
             for top in TOP for p in (ROOT / top).rglob("__init__.py")}
    assert found <= listed, f"missing from [tool.setuptools] packages: {sorted(found - listed)}"

"""The library reference: every public function has an entry other sites can link to."""

import inspect

import pytest
from sphinx.util.inventory import InventoryFile

import xentlib
import xentlib.naive
import xentlib.sharded

from .conftest import SITE
from .test_pages import _Anchors

pytestmark = pytest.mark.site


def public_functions():
    """``xentlib.<name>`` for every function a user is promised."""
    top = [
        f"xentlib.{name}"
        for name in xentlib.__all__
        if inspect.isfunction(getattr(xentlib, name))
    ]
    naive = [f"xentlib.naive.{name}" for name in xentlib.naive.__all__]
    return [*top, *naive, "xentlib.sharded.cross_entropy"]


@pytest.fixture(scope="module")
def inventory():
    with open(SITE / "objects.inv", "rb") as stream:
        return InventoryFile.load(stream, "", lambda base, uri: uri)


def test_inventory_names_the_project(inventory):
    projects = {entry[0] for entries in inventory.values() for entry in entries.values()}
    assert projects == {"xentlib"}


@pytest.mark.parametrize("name", public_functions())
def test_every_public_function_has_an_entry(inventory, name):
    entry = inventory.get("py:function", {}).get(name)
    assert entry is not None, f"{name} is not in objects.inv as a py:function"
    page, _, anchor = entry[2].partition("#")
    parser = _Anchors()
    parser.feed((SITE / page).read_text(encoding="utf-8"))
    assert anchor in parser.ids, f"{name}: {page} has no #{anchor}"

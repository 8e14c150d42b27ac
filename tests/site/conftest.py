"""Serve the built site on loopback and open it in Debian's Chromium through Playwright.

These tests read what ``make book`` wrote into ``_build/html``; ``make
site-test`` builds first. They carry the ``site`` marker, which the default
pytest run deselects (pyproject.toml), because they need the build and a
browser.
"""

import functools
import http.server
import re
import subprocess
import sys
import threading
from pathlib import Path

import jupytext
import pytest
import yaml

from _ext.notebook_download import chapter_requirements, is_myst_notebook

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 800}

# Without the background-networking flags Chromium phones home at start-up;
# this machine's closed network refuses those connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def toc_pages():
    """The documents of ``_toc.yml`` in reading order, e.g. ``['book/intro', ...]``."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    pages = [toc["root"]]

    def add(entries):
        for entry in entries:
            pages.append(entry["file"])
            add(entry.get("sections", []))

    for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}]):
        add(part["chapters"])
    return pages


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


@pytest.fixture(scope="session")
def server():
    """Base URL of ``_build/html`` served on an ephemeral loopback port."""
    if not (SITE / "index.html").exists():
        pytest.fail(f"{SITE} has no index.html: run `make book` first (make site-test does)")
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def chapters():
    """The pages of ``_toc.yml`` that are notebooks."""
    return [page for page in toc_pages() if is_myst_notebook(ROOT / f"{page}.md")]


@pytest.fixture(scope="session")
def notebook_venv(tmp_path_factory):
    """A fresh venv with only the xentlib wheel, the chapters' imports and ipykernel.

    Installed from the registry at the versions of requirements.txt, as a reader
    would; its kernel is registered under its own prefix as ``throwaway``.
    """
    wheels = sorted((ROOT / "_build" / "wheel").glob("xentlib-*.whl"))
    if not wheels:
        pytest.fail("_build/wheel has no xentlib wheel: run `make book` first")
    venv = tmp_path_factory.mktemp("notebook-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    # pip refuses extras in a constraints file: dask[array]==x constrains dask==x.
    pins = re.sub(r"\[[^\]]*\]", "", (ROOT / "requirements.txt").read_text(encoding="utf-8"))
    constraints = venv / "constraints.txt"
    constraints.write_text(pins, encoding="utf-8")
    needs = set().union(
        *(chapter_requirements(jupytext.read(ROOT / f"{page}.md")) for page in chapters())
    )
    subprocess.run(
        [
            python, "-m", "pip", "install", "--quiet", "-c", str(constraints),
            *sorted(needs), "ipykernel", str(wheels[-1]),
        ],
        check=True,
    )
    subprocess.run(
        [python, "-m", "ipykernel", "install", "--prefix", str(venv), "--name", "throwaway"],
        check=True,
        capture_output=True,
    )
    return venv

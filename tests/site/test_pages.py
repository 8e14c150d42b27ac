"""Every page of the table of contents, as a reader's browser meets it."""

import html.parser
import re
import shutil
import subprocess
import urllib.parse

import nbformat
import pytest

from _ext.notebook_download import is_myst_notebook

from .conftest import ROOT, SCREENSHOTS, SITE, VIEWPORT, toc_pages

pytestmark = pytest.mark.site

PAGES = toc_pages()

# A fresh browser profile has no stored theme mode; the theme says so on the console.
ALLOWED_CONSOLE_ERRORS = ("Got invalid theme mode",)

# Text a reader sees outside code: what MathJax should have turned into equations.
VISIBLE_PROSE = """() => {
    const article = document.querySelector("article").cloneNode(true);
    article.querySelectorAll("pre, code, script, style, mjx-container").forEach(e => e.remove());
    return article.textContent;
}"""


class Visit:
    """One page opened in a fresh browser context, with what it logged and requested."""

    def __init__(self, browser, server, name, viewport=VIEWPORT):
        self.name = name
        self.url = f"{server}/{name}.html"
        self.context = browser.new_context(viewport=viewport)
        self.console_errors = []
        self.page_errors = []
        self.failed_requests = []
        self.foreign_requests = []
        self.page = self.context.new_page()
        self.page.on("console", self._on_console)
        # An uncaught exception is not a console message; a 404 is only sometimes one.
        self.page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        self.page.on("requestfailed", lambda request: self.failed_requests.append(request.url))
        self.page.on("response", self._on_response)
        self.page.route("**/*", lambda route: self._only_local(route, server))
        self.response = self.page.goto(self.url, wait_until="networkidle")
        if self.page.locator(".math").count():
            self.page.wait_for_function(
                "() => window.MathJax && MathJax.startup && MathJax.startup.promise"
            )
            self.page.evaluate("() => MathJax.startup.promise")

    def _on_console(self, message):
        if message.type == "error" and not message.text.startswith(ALLOWED_CONSOLE_ERRORS):
            self.console_errors.append(message.text)

    def _on_response(self, response):
        if response.status >= 400:
            self.failed_requests.append(f"{response.url} (HTTP {response.status})")

    def _only_local(self, route, server):
        url = route.request.url
        if url.startswith(server + "/") or url.startswith("data:"):
            route.continue_()
        else:
            self.foreign_requests.append(url)
            route.abort()

    def close(self):
        self.context.close()


@pytest.fixture(scope="module", params=PAGES)
def visit(request, browser, server):
    visit = Visit(browser, server, request.param)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    visit.page.screenshot(
        path=SCREENSHOTS / f"{request.param.replace('/', '-')}.png",
        full_page=True,
    )
    yield visit
    visit.close()


def test_page_loads(visit):
    assert visit.response.status == 200, f"{visit.url}: HTTP {visit.response.status}"


def test_no_console_error(visit):
    assert not visit.console_errors, f"{visit.name}: {visit.console_errors}"


def test_no_page_error(visit):
    assert not visit.page_errors, f"{visit.name}: uncaught {visit.page_errors}"


def test_every_request_succeeds(visit):
    # Requests to other hosts are aborted on purpose; the next test reports those.
    failed = [url for url in visit.failed_requests if url not in visit.foreign_requests]
    assert not failed, f"{visit.name}: {failed}"


def test_no_request_leaves_the_local_server(visit):
    assert not visit.foreign_requests, f"{visit.name} requested {visit.foreign_requests[0]}"


def test_every_equation_is_rendered(visit):
    math = visit.page.locator(".math")
    for i in range(math.count()):
        assert math.nth(i).locator("mjx-container").count() == 1, (
            f"{visit.name}: equation {i} not rendered: {math.nth(i).inner_text()[:80]!r}"
        )
    prose = visit.page.evaluate(VISIBLE_PROSE)
    raw = re.search(r"\$\$|\\begin|\\\(|\\\[", prose)
    assert raw is None, f"{visit.name}: raw TeX {raw.group()!r} left in the text"


def test_every_figure_loads(visit):
    images = visit.page.locator("article img")
    for i in range(images.count()):
        width = images.nth(i).evaluate("img => img.complete ? img.naturalWidth : 0")
        assert width > 0, f"{visit.name}: {images.nth(i).get_attribute('src')} did not load"


def test_every_figure_says_what_it_shows(visit):
    # Without cell metadata, myst-nb's alt text is the image's file path.
    images = visit.page.locator("article img")
    for i in range(images.count()):
        alt = images.nth(i).get_attribute("alt") or ""
        assert len(alt.split()) >= 5 and not alt.endswith(".png"), (
            f"{visit.name}: figure {i} has alt text {alt!r}"
        )


# Code, outputs and display equations that a reader would have to scroll sideways.
SIDEWAYS = """() => [...document.querySelectorAll("article pre, article div.math")]
    .filter(e => e.scrollWidth > e.clientWidth + 1)
    .map(e => e.textContent.trim().split("\\n")[0].slice(0, 60))"""


def test_nothing_scrolls_sideways(visit):
    wide = visit.page.evaluate(SIDEWAYS)
    assert not wide, f"{visit.name}: {len(wide)} blocks wider than the page, first: {wide[0]!r}"


def test_notebook_download(visit):
    if not is_myst_notebook(ROOT / f"{visit.name}.md"):
        pytest.skip(f"{visit.name} is a plain page, not a notebook")
    link = visit.page.locator('a[href$=".ipynb"]')
    assert link.count() == 1, f"{visit.name}: {link.count()} .ipynb links"
    response = visit.page.request.get(link.evaluate("a => a.href"))
    assert response.status == 200
    notebook = nbformat.reads(response.text(), as_version=4)
    nbformat.validate(notebook)
    assert any(cell.cell_type == "code" for cell in notebook.cells)


@pytest.mark.parametrize(
    "here, after", list(zip(PAGES[:-1], PAGES[1:], strict=True)), ids=PAGES[:-1]
)
def test_sidebar_reaches_the_next_page(browser, server, here, after):
    visit = Visit(browser, server, here)
    try:
        visit.page.locator(f'nav.bd-docs-nav a[href$="{after.split("/")[-1]}.html"]').click()
        visit.page.wait_for_url(f"{server}/{after}.html")
    finally:
        visit.close()


PHONE = {"width": 390, "height": 844}
CHAPTER_LINK = 'nav.bd-docs-nav a[href$="gather.html"]'


def test_phone_menu_opens_and_leads_to_a_chapter(browser, server):
    visit = Visit(browser, server, "book/formula", viewport=PHONE)
    try:
        link = visit.page.locator(CHAPTER_LINK)
        assert not link.is_visible(), "the chapter list shows before the menu is opened"
        visit.page.locator(".primary-toggle:visible").click()
        link.wait_for(state="visible")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        visit.page.screenshot(path=SCREENSHOTS / "phone-menu-open.png")
        link.click()
        visit.page.wait_for_url(f"{server}/book/gather.html")
    finally:
        visit.close()


def test_phone_page_contents_open(browser, server):
    visit = Visit(browser, server, "book/formula", viewport=PHONE)
    try:
        contents = visit.page.locator("#pst-page-toc-nav a").first
        assert not contents.is_visible(), "the page contents show before they are asked for"
        visit.page.locator(".secondary-toggle:visible").click()
        contents.wait_for(state="visible")
    finally:
        visit.close()


@pytest.mark.parametrize("name", PAGES)
def test_page_fits_a_phone(browser, server, name):
    visit = Visit(browser, server, name, viewport=PHONE)
    try:
        width = visit.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{name} is {width} px wide on a {PHONE['width']} px phone"
    finally:
        visit.close()


def test_desktop_sidebar_collapses_and_comes_back(browser, server):
    visit = Visit(browser, server, "book/formula")
    try:
        link = visit.page.locator(CHAPTER_LINK)
        toggle = visit.page.locator(".primary-toggle:visible")
        assert link.is_visible()
        toggle.click()
        link.wait_for(state="hidden")
        toggle.click()
        link.wait_for(state="visible")
    finally:
        visit.close()


@pytest.mark.parametrize("word", ["logsumexp", "gather"])
def test_search_finds(browser, server, word):
    visit = Visit(browser, server, "search")
    try:
        visit.page.goto(f"{server}/search.html?q={word}")
        results = visit.page.locator("#search-results ul.search li")
        results.first.wait_for()
        assert results.count() > 0
    finally:
        visit.close()


def test_internal_links(server, tmp_path):
    linkchecker = (
        shutil.which("linkchecker", path=str(ROOT / ".venv" / "bin"))
        or shutil.which("linkchecker")
    )
    if linkchecker is None:
        pytest.skip("linkchecker is not installed")
    config = tmp_path / "linkcheckerrc"
    config.write_text("[filtering]\ncheckextern=0\n", encoding="utf-8")
    result = subprocess.run(
        [linkchecker, "--config", str(config), "--no-status", f"{server}/index.html"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:]


class _Anchors(html.parser.HTMLParser):
    """The ids a page defines and the links it makes."""

    def __init__(self):
        super().__init__()
        self.ids, self.links = set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.ids.update(attrs[key] for key in ("id", "name") if attrs.get(key))
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])


def test_internal_anchors():
    # linkchecker's AnchorCheck downloads a page again for every anchor that
    # points into it (minutes here); reading each built page once is enough.
    pages = {}
    for path in SITE.rglob("*.html"):
        parser = _Anchors()
        parser.feed(path.read_text(encoding="utf-8"))
        pages[path] = parser
    broken = []
    for path, parser in pages.items():
        for link in parser.links:
            target, _, fragment = link.partition("#")
            if not fragment or urllib.parse.urlsplit(target).scheme:
                continue
            page = (path.parent / urllib.parse.unquote(target)).resolve() if target else path
            if page in pages and urllib.parse.unquote(fragment) not in pages[page].ids:
                broken.append(f"{path.relative_to(SITE)}: {link}")
    assert not broken, f"{len(broken)} links to missing anchors, first: {broken[0]}"

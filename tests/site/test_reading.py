"""What a reader sees on the built pages: code that is mostly maths and checks, a
question index whose every entry lands on a section, and a bibliography labelled as
the text cites it.

These read ``_build/html`` as files; no browser is needed, but they need ``make book``
first, so they carry the ``site`` marker like the browser tests.
"""

import html.parser
import re
import urllib.parse

import pytest

from .conftest import SITE, chapters

pytestmark = pytest.mark.site

CHAPTERS = chapters()

# Calls that serve the page, not the reader: pasting values into the prose and
# copying arrays to the host for printing or plotting.
PLUMBING = ("glue(", "to_numpy(")
MAX_PLUMBING_SHARE = 0.05
MIN_QUESTIONS = 40
VOID_TAGS = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"
}


class _VisibleCode(html.parser.HTMLParser):
    """Lines of code-cell inputs shown without a click (not folded in a <details>)."""

    def __init__(self):
        super().__init__()
        self.lines = []
        self._stack = []  # (tag, opens a cell input, is a <details>)
        self._text = None

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        self._stack.append((tag, "cell_input" in classes, tag == "details"))
        in_input = any(opens for _, opens, _ in self._stack)
        folded = any(details for _, _, details in self._stack)
        if tag == "pre" and in_input and not folded:
            self._text = []

    def handle_endtag(self, tag):
        while self._stack:
            if self._stack.pop()[0] == tag:
                break
        if tag == "pre" and self._text is not None:
            self.lines += "".join(self._text).splitlines()
            self._text = None

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)


def visible_code_lines(page):
    """Non-blank, non-comment lines of the code a reader sees on ``page`` without a click."""
    parser = _VisibleCode()
    parser.feed((SITE / f"{page}.html").read_text(encoding="utf-8"))
    stripped = (line.strip() for line in parser.lines)
    return [line for line in stripped if line and not line.startswith("#")]


def test_visible_code_is_mostly_maths_and_checks():
    counts = {}
    for page in CHAPTERS:
        lines = visible_code_lines(page)
        counts[page] = (sum(any(call in line for call in PLUMBING) for line in lines), len(lines))
    plumbing = sum(p for p, _ in counts.values())
    total = sum(n for _, n in counts.values())
    assert total > 500, f"only {total} visible code lines found: has the theme's markup changed?"
    detail = ", ".join(f"{page}: {p}/{n}" for page, (p, n) in counts.items())
    assert plumbing <= MAX_PLUMBING_SHARE * total, (
        f"{plumbing} of {total} visible code lines ({plumbing / total:.1%}) call glue( or "
        f"to_numpy(; at most {MAX_PLUMBING_SHARE:.0%} expected ({detail})"
    )


class _Article(html.parser.HTMLParser):
    """Links inside <article> and every id of the page."""

    def __init__(self):
        super().__init__()
        self.ids, self.links = set(), []
        self._depth = 0  # how deep inside <article>

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.ids.update(attrs[key] for key in ("id", "name") if attrs.get(key))
        if (tag == "article" or self._depth) and tag not in VOID_TAGS:
            self._depth += 1
        if self._depth and tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])

    def handle_endtag(self, tag):
        if self._depth:
            self._depth -= 1


def _parse(path):
    parser = _Article()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_every_question_lands_on_a_section():
    index = SITE / "book" / "questions.html"
    links = [link for link in _parse(index).links if not urllib.parse.urlsplit(link).scheme]
    sections = [link for link in links if "#" in link and not link.startswith("#")]
    assert len(sections) >= MIN_QUESTIONS, f"{len(sections)} questions link to a section"
    missing = []
    for link in sections:
        target, _, fragment = link.partition("#")
        page = (index.parent / urllib.parse.unquote(target)).resolve()
        if not page.is_file() or urllib.parse.unquote(fragment) not in _parse(page).ids:
            missing.append(link)
    assert not missing, f"{len(missing)} question links land nowhere, first: {missing[0]}"


BIBLIOGRAPHY_LABEL = re.compile(
    r'id="([^"]+)" role="doc-biblioentry">\s*'
    r'<span class="label"><span class="fn-bracket">\[</span>([^<]+)<'
)
CITATION = re.compile(
    r'<a class="reference internal" href="references\.html#([^"]+)"[^>]*>(.*?)</a>'
)


def test_bibliography_labels_read_like_the_citations():
    references = (SITE / "book" / "references.html").read_text(encoding="utf-8")
    labels = dict(BIBLIOGRAPHY_LABEL.findall(references))
    assert labels, "no bibliography entries found on the references page"
    cited, mismatched = 0, []
    for page in CHAPTERS:
        page_html = (SITE / f"{page}.html").read_text(encoding="utf-8")
        for anchor, html_text in CITATION.findall(page_html):
            text, label = re.sub(r"<[^>]+>", "", html_text), labels[anchor]
            cited += 1
            # [Cover and Thomas, 2006] in parentheses; Bridle [1990] in running text
            if text != label and not (text.isdigit() and label.endswith(f", {text}")):
                mismatched.append(f"{page}: cited as {text!r}, listed as [{label}]")
    assert cited > 10 and not mismatched, mismatched

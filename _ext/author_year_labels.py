"""Bibliography labels in the form the text cites: [Cover and Thomas, 2006].

The chapters cite author-year (``bibtex_reference_style: author_year``), while
pybtex's styles label the bibliography [CT06]. This registers a formatting
style, ``author_year``, that keeps the alpha style's order and formatting and
labels each entry the way its citations read.
"""

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.alpha import Style as AlphaStyle
from pybtex.style.labels import BaseLabelStyle


def _surname(person):
    return Text.from_latex(" ".join(person.last_names)).render_as("text")


def _authors(persons):
    names = [_surname(person) for person in persons]
    if len(names) == 1:
        return names[0]
    if len(names) == 2:
        return f"{names[0]} and {names[1]}"
    return f"{names[0]} et al."


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        for entry in sorted_entries:
            yield f"{_authors(entry.persons['author'])}, {entry.fields['year']}"


class AuthorYearStyle(AlphaStyle):
    default_label_style = AuthorYearLabels


def setup(app):
    register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

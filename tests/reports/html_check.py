"""Read an HTML report back with the stdlib parser: structure, cards, controls, links and tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Table:
    title: str
    rows: list[list[str]] = field(default_factory=list)


@dataclass
class Section:
    attrs: dict
    cards: list[dict] = field(default_factory=list)
    controls: list[tuple[str, dict]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    headline: str = ""
    imgs: list[dict] = field(default_factory=list)


class ReportParser(HTMLParser):
    """Checks balance (every non-void tag closed in order) and collects what the tests look at."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.sections: list[Section] = []
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.scripts = 0
        self.title = ""
        self._text_target: str | None = None
        self._h3 = ""
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._headline: list[str] | None = None
        self._in_title = False
        self._table: Table | None = None

    # -- structure
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if key in a:
                self.urls.append((tag, key, a[key] or ""))
        if tag == "script":
            self.scripts += 1
        if tag == "title":
            self._in_title = True
        sec = self.sections[-1] if self.sections else None
        classes = (a.get("class") or "").split()
        if tag == "section" and "layer" in classes:
            self.sections.append(Section(attrs=a))
        elif sec is not None:
            if tag == "article" and "card" in classes:
                sec.cards.append(a)
            if tag in ("select", "input") and any(c.startswith("f-") for c in classes):
                sec.controls.append((tag, a))
            if tag == "img":
                sec.imgs.append(a)
            if tag == "h3":
                self._h3 = ""
                self._text_target = "h3"
            if tag == "table":
                self._table = Table(self._h3) if self._h3 else None
                if self._table is not None:
                    sec.tables.append(self._table)
                self._h3 = ""
            if tag == "tr" and self._table is not None:
                self._row = []
            if tag in ("td",) and self._row is not None:
                self._cell = []
            if tag == "p" and "headline" in classes:
                self._headline = []
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
            if tag in self.stack:
                while self.stack and self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()
        sec = self.sections[-1] if self.sections else None
        if tag == "title":
            self._in_title = False
        if tag == "h3":
            self._text_target = None
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        if tag == "tr" and self._row is not None and self._table is not None:
            if self._row:
                self._table.rows.append(self._row)
            self._row = None
        if tag == "table":
            self._table = None
        if tag == "p" and self._headline is not None and sec is not None:
            sec.headline = " ".join("".join(self._headline).split())
            self._headline = None

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        if self._text_target == "h3":
            self._h3 += data
        if self._cell is not None:
            self._cell.append(data)
        if self._headline is not None:
            self._headline.append(data)


def parse_report(text: str) -> ReportParser:
    parser = ReportParser()
    parser.feed(text)
    parser.close()
    return parser


def table(section: Section, title: str) -> Table:
    for t in section.tables:
        if t.title == title:
            return t
    raise AssertionError(f"no table {title!r}; have {[t.title for t in section.tables]}")

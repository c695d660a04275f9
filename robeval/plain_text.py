"""Docstrings as plain text for the terminal: reStructuredText markup removed
(``:class:`~a.B``` -> ``B``, ``:math:`x``` -> ``x``, ``**bold**``, ``::``; a double-quoted
literal keeps one pair of backquotes, as in the CLI's own help), and the first sentence of
a docstring as a one-line summary."""

from __future__ import annotations

import inspect
import re

_ROLE = re.compile(r":(?:[\w-]+:)?[\w-]+:`([^`]+)`")
_LITERAL = re.compile(r"``(.+?)``", re.DOTALL)
_DEFAULT_ROLE = re.compile(r"(?<![\w`])`([^`\n]+)`(?![\w`])")
_STRONG = re.compile(r"\*\*(\S(?:.*?\S)?)\*\*", re.DOTALL)
_EMPHASIS = re.compile(r"(?<![\w*])\*(\S(?:[^*\n]*?\S)?)\*(?![\w*])")
#: words after which a full stop does not end a sentence
_ABBREVIATIONS = frozenset({"al", "eq", "eqs", "sec", "secs", "fig", "figs", "tab", "e.g", "i.e", "vs", "cf", "no",
                            "ref", "refs", "approx", "resp", "ch", "app", "alg", "thm", "def", "st", "etc"})


def _role_target(match: re.Match[str]) -> str:
    text = match.group(1).strip()
    titled = re.fullmatch(r"(.*?)\s*<[^>]+>", text, re.DOTALL)
    if titled and titled.group(1):
        return titled.group(1)
    if text.startswith("~"):
        return text[1:].rsplit(".", 1)[-1]
    return text


def plain(text: str) -> str:
    """``text`` with its reStructuredText inline markup removed."""
    text = _ROLE.sub(_role_target, text)
    text = _DEFAULT_ROLE.sub(lambda m: m.group(1), text)
    text = _LITERAL.sub(lambda m: f"`{m.group(1)}`", text)
    text = _STRONG.sub(lambda m: m.group(1), text)
    text = _EMPHASIS.sub(lambda m: m.group(1), text)
    text = re.sub(r"(?m)^\s*::\s*$", "", text)  # a bare literal-block marker
    text = re.sub(r"\s::(?=\s|$)", ":", text)  # "text ::" -> "text:"
    return re.sub(r"::(?=\s|$)", ":", text)


def paragraphs(obj_or_doc: object) -> list[str]:
    """The paragraphs of a docstring (or of ``obj``'s docstring), in plain text, each
    with its lines kept as written (literal blocks keep their layout)."""
    doc = obj_or_doc if isinstance(obj_or_doc, str) else inspect.getdoc(obj_or_doc) or ""
    return [plain(part).rstrip() for part in re.split(r"\n\s*\n", inspect.cleandoc(doc)) if part.strip()]


def one_line(text: str) -> str:
    """``text`` with its whitespace collapsed to single spaces."""
    return " ".join(text.split())


def first_sentence(text: str) -> str:
    """The first sentence of ``text`` (a full stop outside brackets and quotes, not after
    an abbreviation such as "et al." or "Eq."), as one line; a trailing colon becomes a
    full stop."""
    flat = one_line(text)
    depth = 0
    quoted = False
    for i, char in enumerate(flat):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(0, depth - 1)
        elif char == '"':
            quoted = not quoted
        elif char in ".!?" and depth == 0 and not quoted and (i + 1 == len(flat) or flat[i + 1] == " "):
            word = re.split(r"[\s(]", flat[:i])[-1].lower()
            if word in _ABBREVIATIONS or "." in word or len(word) == 1 and word.isalpha() or i + 1 == len(flat):
                continue
            if not flat[i + 2:i + 3].strip() or flat[i + 2].isdigit():
                continue  # "Table 1. 2" or the end
            return flat[:i + 1]
    return re.sub(r":$", ".", flat)

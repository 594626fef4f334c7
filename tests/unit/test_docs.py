"""The documentation: a short README, relative links (and their #anchors) that resolve, every profile
key in docs/configuration.md, and pages that state current facts, not a work log (history goes in
CHANGELOG.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.config import guard, outbound, parse, parse_sip, tap

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"
CONFIGURATION = DOCS / "configuration.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
MAX_README_LINES = 250

# Every mapping of a profile and the keys it takes, as the parser defines them ("" = top level).
SECTIONS: dict[str, tuple[str, ...]] = {
    "": parse._TOP_KEYS,
    "sip": parse._SIP_KEYS,
    "sip.register": parse_sip._REGISTER_KEYS,
    "sip.rate_limit": guard.RATE_LIMIT_KEYS,
    "sip.inbound_auth": guard.INBOUND_AUTH_KEYS,
    "sip.tls": guard.SIP_TLS_KEYS,
    "bot": parse._BOT_KEYS,
    "bot.on_unreachable": parse._UNREACHABLE_KEYS,
    "bot.on_close": parse._CLOSE_KEYS,
    "bot.tls": guard.BOT_TLS_KEYS,
    "media": parse._MEDIA_KEYS,
    "logging": parse._LOGGING_KEYS,
    "control": parse._CONTROL_KEYS,
    "recording": parse._RECORDING_KEYS,
    "tap": tap.TAP_KEYS,
    "api": outbound.API_KEYS,
    "api.tls": outbound.API_TLS_KEYS,
    "outbound": outbound.OUTBOUND_KEYS,
    "outbound.via": outbound.VIA_KEYS,
}
PROFILE_KEYS = sorted(f"{section}.{key}" if section else key
                      for section, keys in SECTIONS.items() for key in keys)

_FENCE_RE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE_RE = re.compile(r"`[^`\n]*`")
_LINK_RE = re.compile(r"\[[^\]\n]*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING_RE = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _prose(text: str) -> str:
    """The text without fenced code blocks (their `[x](y)` and `# comments` are not Markdown)."""
    return _FENCE_RE.sub("", text)


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, -1, -2 for repeats."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in _HEADING_RE.findall(_prose(path.read_text(encoding="utf-8"))):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _links(path: Path) -> list[str]:
    return _LINK_RE.findall(_INLINE_CODE_RE.sub("", _prose(path.read_text(encoding="utf-8"))))


def test_the_pages_exist() -> None:
    assert README.is_file()
    assert CONFIGURATION.is_file()
    assert len(PAGES) > 2, "docs/*.md is missing"


def test_readme_is_at_most_250_lines() -> None:
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; reference text goes in docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_at_files_and_headings_that_exist(page: Path) -> None:
    broken = []
    for target in _links(page):
        if _SCHEME_RE.match(target):
            continue  # http(s):, mailto:
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with that anchor in {dest.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_the_key_table_covers_every_nested_section_of_the_parser() -> None:
    """A new nested mapping (`sec.section("name", KEYS)`) must be added to SECTIONS above."""
    found = set()
    for source in (REPO / "bridge" / "config").glob("*.py"):
        found.update(re.findall(r"\.section\(\s*\"(\w+)\"", source.read_text(encoding="utf-8")))
    known = {name.rpartition(".")[2] for name in SECTIONS if name}
    assert found - known == set()


def test_configuration_documents_every_profile_key() -> None:
    text = CONFIGURATION.read_text(encoding="utf-8")
    missing = [key for key in PROFILE_KEYS if f"`{key}`" not in text]
    assert not missing, f"docs/configuration.md lacks a row for: {', '.join(missing)}"


def test_configuration_documents_no_key_the_parser_does_not_know() -> None:
    text = CONFIGURATION.read_text(encoding="utf-8")
    roots = "|".join(section for section in SECTIONS if section and "." not in section)
    dotted = set(re.findall(rf"`((?:{roots})(?:\.[a-z_]+)+)`", text))
    unknown = sorted(dotted - set(PROFILE_KEYS))
    assert not unknown, f"docs/configuration.md names keys the parser rejects: {', '.join(unknown)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_pages_state_facts_not_a_work_log(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    log_words = re.findall(r"\bsessions? [0-9]+\b|\brounds? [0-9]+\b|\bwhat changed\b", text, re.IGNORECASE)
    assert not log_words, (
        f"{page.relative_to(REPO)} narrates the work ({', '.join(log_words)}); history goes in CHANGELOG.md"
    )

"""The one line format in which remote commands report back to opsagent: ``@@opsagent <token> <kind> [fields]``.

Remote work prints its progress and delimits its outputs with marker lines: psql scripts with ``\\echo``
(sync, rollback, scratch sessions, catalog reads), shell scripts with ``printf`` (backups and restores,
doctor, the live read and the extract).  Those streams also carry data written by others (query output,
pg_dump text, psql errors echoing user text), so every marker carries a random token made for the command
that prints it (:class:`Markers`): no data can pass for a marker, whatever it contains, since nobody
writing it knows the token.

One object builds a command's markers and reads them back: :meth:`Markers.psql` (an ``\\echo`` line),
:meth:`Markers.sh` (a ``printf`` command) and :meth:`Markers.sh_prefix` (the quoted word the shell
scripts of ``opsagent/scripts`` are filled with, or get as an argument) build; :meth:`Markers.parse`
reads one line, :meth:`Markers.sections` splits a whole output by marker, :meth:`Markers.split_tail`
splits binary output (a compressed dump) from what follows its last marker, and :meth:`Markers.stream`
reads markers live from a byte stream while the command still runs (progress).
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import shlex
from collections.abc import Callable

PREFIX = "@@opsagent"
_TOKEN_RE = re.compile(r"[0-9a-f]{16,64}")
_KIND_RE = re.compile(r"[a-z][a-z0-9-]*")
# a field of an ``\\echo`` line: a word of our own (a version, an index) or a psql variable (``:LAST_ERROR_MESSAGE``);
# quotes, backslashes and blanks would change how psql reads the line
_FIELD_RE = re.compile(r"[^\s'\"`\\]+")


def new_token() -> str:
    """A fresh random token (128 bits, hex): one per remote command or session."""
    return secrets.token_hex(16)


@dataclasses.dataclass(frozen=True)
class Marker:
    """One marker line read back: its kind and the text after the kind (``""`` when none)."""

    line: str  # the whole line, as printed
    kind: str
    text: str

    def words(self, maxsplit: int = -1) -> list[str]:
        """``[kind, field, ...]`` split on single spaces (the last one keeps the rest beyond ``maxsplit``)."""
        return f"{self.kind} {self.text}".split(" ", maxsplit) if self.text else [self.kind]


@dataclasses.dataclass(frozen=True)
class Section:
    """A marker and the lines that follow it, up to the next marker (or the end of the output)."""

    marker: Marker
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines).strip()


@dataclasses.dataclass(frozen=True)
class Markers:
    """The markers of one remote command: built and read with the same token."""

    token: str = dataclasses.field(default_factory=new_token)

    def __post_init__(self) -> None:
        if not _TOKEN_RE.fullmatch(self.token):
            raise ValueError("the marker token must be random hex")

    @property
    def prefix(self) -> str:
        """``@@opsagent <token>``: how every marker line of this command starts."""
        return f"{PREFIX} {self.token}"

    # -- building

    def line(self, kind: str, *fields: str) -> str:
        """The marker line (without its newline)."""
        if not _KIND_RE.fullmatch(kind):
            raise ValueError(f"not a marker kind: {kind!r}")
        bad = [f for f in fields if not _FIELD_RE.fullmatch(f)]
        if bad:
            raise ValueError(f"not a marker field: {bad[0]!r}")
        return " ".join([self.prefix, kind, *fields])

    def psql(self, kind: str, *fields: str) -> str:
        """psql's ``\\echo`` of the marker (a line of its own; ``fields`` may be psql variables: ``:opsagent_ms``)."""
        return "\\echo " + self.line(kind, *fields)

    def sh_prefix(self) -> str:
        """The prefix as one shell word, to fill a script's ``@@MARK@@`` with (``printf '%s %s\\n' @@MARK@@ "$*"``)."""
        return shlex.quote(self.prefix)

    def sh(self, kind: str, *values: str) -> str:
        """A ``printf`` command printing the marker line; ``values`` are shell words written by opsagent (``"$?"``)
        whose expansion ends the line, never user text."""
        head = shlex.quote(self.line(kind))
        return " ".join(["printf", shlex.quote(" ".join(["%s"] * (1 + len(values))) + "\\n"), head, *values])

    # -- reading

    def parse(self, line: str) -> Marker | None:
        """The marker on ``line``, or None when it is not one of this command's markers (data, other tokens)."""
        head = self.prefix + " "
        if not line.startswith(head):
            return None
        kind, _, text = line[len(head) :].partition(" ")
        return Marker(line, kind, text) if kind else None

    def sections(self, text: str) -> tuple[list[str], list[Section]]:
        """(the lines before the first marker, each marker with the lines that follow it)."""
        lead: list[str] = []
        found: list[tuple[Marker, list[str]]] = []
        for line in text.splitlines():
            marker = self.parse(line)
            if marker is not None:
                found.append((marker, []))
            elif found:
                found[-1][1].append(line)
            else:
                lead.append(line)
        return lead, [Section(marker, tuple(lines)) for marker, lines in found]

    def by_kind(self, text: str) -> dict[str, str]:
        """The text after each marker, by the marker's kind (a later marker of the same kind wins)."""
        return {s.marker.kind: s.text for s in self.sections(text)[1]}

    def numbered(self, text: str, kind: str, count: int) -> list[str]:
        """The text after each ``kind N`` marker, for N from 0 to ``count`` - 1 (``""`` where one is missing)."""
        parts = {s.marker.text: s.text for s in self.sections(text)[1] if s.marker.kind == kind}
        return [parts.get(str(i), "") for i in range(count)]

    def split_tail(self, data: bytes, kind: str) -> tuple[bytes, bytes] | None:
        """(the bytes before the last ``kind`` marker, the bytes after it); None without one.

        For output that is binary up to the marker (a compressed dump): the script prints the marker on a line of
        its own after it (``printf '\\n%s\\n' MARKER``), so the marker is looked for between two newlines.
        """
        before, found, after = data.rpartition(f"\n{self.line(kind)}\n".encode())
        return (before, after) if found else None

    def stream(self, on_marker: Callable[[Marker], None]) -> MarkerStream:
        """A reader of stdout chunks as they arrive, calling ``on_marker`` for each complete marker line."""
        return MarkerStream(self, on_marker)


class MarkerStream:
    """Reads marker lines live from a byte stream fed in chunks (``on_stdout``); other lines are ignored."""

    def __init__(self, markers: Markers, on_marker: Callable[[Marker], None]) -> None:
        self.markers = markers
        self.on_marker = on_marker
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        *lines, self._tail = (self._tail + chunk).split(b"\n")
        for line in lines:
            marker = self.markers.parse(line.decode("utf-8", "replace"))
            if marker is not None:
                self.on_marker(marker)

    __call__ = feed

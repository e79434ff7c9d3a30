"""The one duration parser behind every duration flag and inventory key (pure logic)."""

from __future__ import annotations

import pytest

from opsagent.units import parse_duration


@pytest.mark.parametrize(
    ("text", "bare_unit", "whole", "seconds"),
    [
        ("5s", "ms", False, 5.0),
        ("500ms", "ms", False, 0.5),
        ("2min", "s", False, 120.0),
        ("1h", None, False, 3600.0),
        ("1.5s", None, False, 1.5),
        (" 10 s ", "ms", True, 10.0),
        ("250", "ms", True, 0.25),
        ("60", "s", False, 60.0),
        ("0", None, False, 0.0),
        ("0", "ms", True, 0.0),
    ],
)
def test_durations_in_every_spelling_opsagent_accepts(
    text: str, bare_unit: str | None, whole: bool, seconds: float
) -> None:
    assert parse_duration(text, bare_unit=bare_unit, whole=whole) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "bare_unit", "whole"),
    [
        ("90", None, False),  # a bare number where the unit is ambiguous
        ("0.0", None, False),
        ("00", None, False),  # only a plain 0 needs no unit
        ("1.5s", "ms", True),  # a decimal where the value is pasted into a PostgreSQL setting
        ("5 sec", "s", False),
        ("-1s", "s", False),
        ("1e3ms", "ms", False),
        ("", "s", False),
        ("10s; DROP TABLE t", "ms", True),
        ("5d", "s", False),
        ("s", "s", False),
    ],
)
def test_anything_else_is_not_a_duration(text: str, bare_unit: str | None, whole: bool) -> None:
    assert parse_duration(text, bare_unit=bare_unit, whole=whole) is None

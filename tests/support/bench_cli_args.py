"""The parsed arguments of `dmabuf-inspect bench`, with devices looked up under a test tree."""

from __future__ import annotations

import argparse
from pathlib import Path

from dmabuf_inspect.cli.commands import bench
from dmabuf_inspect.kernel.reader import Roots


def bench_args(tmp_path: Path, **kw: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args([])
    args.roots = Roots(dev_root=str(tmp_path), sys_root=str(tmp_path))
    for k, v in kw.items():
        setattr(args, k, v)
    return args

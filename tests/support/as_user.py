"""Run something as another user, in a forked child that drops its privileges (tests run as root
in the lab, and may run as root on the host): what an unprivileged user would get.

    code, text = call_as(NOBODY, func)            # str(func()), or "ExcType: message" and code 1
    code, out, err = main_as(NOBODY, ["dump"])    # the CLI's main(argv): exit code, stdout, stderr

Every command's module is imported first: a module imported after setuid() would be read as
that user (the checkout may not be readable to it).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable

from dmabuf_inspect.cli.main import _command_modules, main

NOBODY = 65534


def _drop_to(uid: int) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def call_as(uid: int, func: Callable[[], object]) -> tuple[int, str]:
    """func() in a forked child as `uid`: (exit code, its str() or the error, "Type: message")."""
    _command_modules()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            _drop_to(uid)
            out = str(func())
        except BaseException as exc:
            out, code = f"{type(exc).__name__}: {exc}", 1
        os.write(w, out.encode())
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out


def main_as(uid: int, argv: list[str]) -> tuple[int, str, str]:
    """main(argv) in a forked child as `uid`, which inherits this process's fds: (exit code,
    stdout, stderr); a traceback goes to stderr with code 99."""
    _command_modules()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        pid = os.fork()
        if pid == 0:
            code = 99
            try:
                sys.stdout = open(out.fileno(), "w", closefd=False)  # noqa: SIM115
                sys.stderr = open(err.fileno(), "w", closefd=False)  # noqa: SIM115
                _drop_to(uid)
                code = main(argv)
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        return os.waitstatus_to_exitcode(status), out.read(), err.read()

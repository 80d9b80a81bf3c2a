"""Errors a user may see: each carries an exit code and prints as one line."""

from __future__ import annotations

import errno
import os

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class DmabufInspectError(Exception):
    """Base of every error the CLI turns into one line on stderr."""

    exit_code = EXIT_FAILURE


class UsageError(DmabufInspectError):
    exit_code = EXIT_USAGE


class NotADmabufError(DmabufInspectError, ValueError):
    """The fd (or path) given is not a dma-buf."""


def describe_oserror(step: str, exc: OSError) -> str:
    """'STEP: Permission denied' — the step that failed, then the errno text."""
    code = exc.errno if exc.errno is not None else 0
    text = os.strerror(code) if code else str(exc)
    name = errno.errorcode.get(code, "")
    return f"{step}: {text}" + (f" ({name})" if name else "")


class SyscallError(DmabufInspectError, OSError):
    """A system call or ioctl failed. One line: the step, the errno, and the likely cause.

    It is an OSError too, so `.errno` keeps the kernel's errno.
    """

    def __init__(self, message: str, code: int | None, step: str) -> None:
        OSError.__init__(self, code, message)
        self.message = message
        self.step = step

    def __str__(self) -> str:
        return self.message


COMMON_CAUSES: dict[int, str] = {
    errno.ENOMEM: "the kernel is out of memory for this request; free some memory or ask for less",
    errno.EMFILE: "this process has too many open files; raise the limit (ulimit -n)",
    errno.ENFILE: "the system has too many open files",
    errno.EBADF: "the file descriptor is not open",
    errno.EFAULT: "the kernel could not read the argument (a bug in dmabuf-inspect)",
}


def syscall_error(step: str, exc: OSError, causes: dict[int, str] | None = None) -> SyscallError:
    """Wrap `exc` as a SyscallError: 'STEP: Text (ENAME): likely cause'.

    `causes` maps an errno to what it most likely means for this step; COMMON_CAUSES fill in.
    """
    code = exc.errno
    cause = None
    if code is not None:
        cause = (causes or {}).get(code) or COMMON_CAUSES.get(code)
    base = describe_oserror(step, exc)
    return SyscallError(f"{base}: {cause}" if cause else base, code, step)


class InvalidArgumentError(UsageError, ValueError):
    """A value given to the API or the CLI that the kernel would refuse, caught before the call."""


def device_permission_cause(path: str, udev_match: str) -> str:
    """What to do about EACCES/EPERM on a device node: who may open it, and how to get in."""
    try:
        st = os.stat(path)
        import grp
        import pwd

        owner = pwd.getpwuid(st.st_uid).pw_name
        group = grp.getgrgid(st.st_gid).gr_name
        who = f" ({path} is {owner}:{group} mode {st.st_mode & 0o777:04o})"
    except (OSError, KeyError):
        who = ""
    return (
        f"no permission to open {path}{who}; run as root, or give a group access with a udev rule "
        f'such as {udev_match}, GROUP="video", MODE="0660" and join that group'
    )

"""Files from folders the user does not control: only regular files are read, and every file or folder that cannot
be used comes back as `path: reason`, never as an exception or a hang.

A FIFO named `x.go` would block `open` forever and a device node would read until memory ran out, so files are
opened non-blocking and checked with `fstat` before a byte is read. The walk is a loop, not recursion, so a tree
nested thousands of folders deep cannot overflow the stack; symlinked folders are not followed, so no loop either.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}
KINDS |= {stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


class FileProblem(OSError):
    """A file that cannot be read as a regular file; the message is the reason."""


def shown(path: str) -> str:
    """The path as text any terminal and JSON file can take: bytes that are not UTF-8 as \\x escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    return f"not a regular file ({KINDS.get(stat.S_IFMT(mode), 'special file')})"


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading if it is a regular file, else FileProblem with the reason."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise FileProblem(f"cannot read: {exc.strerror}") from None
    problem = _not_regular(os.fstat(descriptor).st_mode)
    if problem:
        os.close(descriptor)
        raise FileProblem(problem)
    return os.fdopen(descriptor, "rb")


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, else FileProblem with the reason."""
    with open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > limit:
            raise FileProblem(f"{size} bytes, over data.generation.max_file_bytes ({limit})")
        try:
            return handle.read(limit + 1)
        except OSError as exc:
            raise FileProblem(f"cannot read: {exc.strerror}") from None


@dataclass
class Walk:
    files: list[str] = field(default_factory=list)  # relative POSIX paths, each folder's files before its subfolders
    problems: list[str] = field(default_factory=list)  # "relative path: reason"


def walk(
    root: Path,
    folder_reason: Callable[[str, str], str | None],
    wanted: Callable[[str], bool],
    confined: bool = True,
) -> Walk:
    """Regular files under `root` (sorted, depth first) whose relative path is `wanted`.

    `folder_reason(relative, name)` says why a folder is passed over (None: walk it). Symlinked folders are not
    followed; with `confined`, a symlinked file must resolve inside `root`. Unreadable folders, file names that are
    not UTF-8, dangling or looping symlinks and special files are problems, named with their reason.
    """
    result = Walk()
    real_root = os.path.realpath(root)
    pending = [""]
    while pending:
        relative_folder = pending.pop()
        try:
            with os.scandir(root / relative_folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as exc:
            result.problems.append(f"{shown(relative_folder or '.')}: cannot read folder: {exc.strerror}")
            continue
        subfolders = []
        for entry in entries:
            relative = f"{relative_folder}/{entry.name}" if relative_folder else entry.name
            is_folder = entry.is_dir(follow_symlinks=False)
            if not is_folder and not wanted(relative) and not _linked_folder(entry):
                continue  # a symlinked folder is named whatever its name, as it may hold wanted files
            problem = _name_problem(relative) or (
                folder_reason(relative, entry.name) if is_folder else _file_problem(entry, real_root, confined)
            )
            if problem:
                result.problems.append(f"{shown(relative)}: {problem}")
            elif is_folder:
                subfolders.append(relative)
            else:
                result.files.append(relative)
        pending.extend(reversed(subfolders))
    return result


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _name_problem(relative: str) -> str | None:
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        return "name is not valid UTF-8"
    return None


def _linked_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_symlink() and entry.is_dir()
    except OSError:  # a symlink loop
        return False


def _file_problem(entry: os.DirEntry, real_root: str, confined: bool) -> str | None:
    try:
        mode = entry.stat().st_mode  # follows a symlink: a loop or a dangling one fails here
    except OSError as exc:
        what = "dangling symlink" if entry.is_symlink() and exc.errno == errno.ENOENT else "cannot read"
        return f"{what}: {exc.strerror}"
    if entry.is_symlink():
        if stat.S_ISDIR(mode):
            return "symlinked folder not followed"
        if confined and not _inside(os.path.realpath(entry.path), real_root):
            return "symlink pointing outside the repository"
    return _not_regular(mode)

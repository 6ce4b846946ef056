"""Small helpers shared by the ML modules and `hpo/`: atomic file writes, reading a user's text file, names from
users used as path components, the rich progress bar.

Bottom layer: imports nothing from `maskcls_hpo` and only the standard library at import time (rich is
imported when a bar is actually shown), so every module may use it.

Atomic writes: the new content goes to a temporary file in the target's folder, named
``.<name>.<random>.tmp`` and created exclusively (so every writer, in any thread or process, has its own),
then :func:`os.replace` renames it over the target. A reader sees the old file or the whole new one, never a
part; when two writers race, the target holds one writer's complete content. On any failure the temporary
file is removed and the target is left as it was. The temporary file is created with mode ``0o666`` less the
umask, as ``open(path, "w")`` would, so the target keeps the usual permissions. There is no ``fsync``: the
write survives a crash of the writing process, not a power cut (the same as the copies this replaced).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import secrets
import shutil
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "progress_bar",
    "Advance",
    "read_text_file",
    "check_path_name",
    "path_under",
    "check_output_file",
    "check_whole_number",
    "check_cache_dir",
    "check_output_folder",
    "DISK_FULL",
    "free_bytes",
    "disk_full_reason",
    "full_folder",
]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh, empty temporary file beside `path`; when the block ends without an exception it is
    renamed over `path` (:func:`os.replace`), otherwise it is removed and `path` is untouched.

    For writers that want a file name rather than bytes (``torch.save``, ``DataFrame.to_csv``, ``np.memmap``).
    The parent folder must exist.

    Raises:
        OSError: the folder is missing or not writable (e.g. ``NotADirectoryError`` when a parent is a file);
            whatever the block raises passes through unchanged.
    """
    target = Path(path)
    tmp = _create_temp(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)  # a no-op after the rename


def _create_temp(target: Path) -> Path:
    """Create ``.<name>.<16 hex>.tmp`` beside `target` with O_EXCL (a new name on the rare collision)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
        try:
            os.close(os.open(tmp, flags, 0o666))
        except FileExistsError:  # pragma: no cover - 64 random bits
            continue
        return tmp


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Replace the file `path` by `data` atomically (module docstring); the parent folder must exist.

    Returns:
        `path` as a :class:`Path`.

    Raises:
        OSError: the folder is missing or not writable. TypeError: `data` is not bytes-like. Nothing is left
            behind by a failed write.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Replace the file `path` by `text` atomically (module docstring), encoded with `encoding`; line ends
    are written as given (no newline translation). The parent folder must exist.

    Returns:
        `path` as a :class:`Path`.

    Raises:
        OSError: the folder is missing or not writable. UnicodeEncodeError / AttributeError: `text` cannot be
            encoded. Nothing is left behind by a failed write.
    """
    return atomic_write_bytes(path, text.encode(encoding))


class Advance(Protocol):
    """What :func:`progress_bar` yields: call it once per finished step, with the step's loss when the bar
    shows one."""

    def __call__(self, loss: float = math.nan) -> None: ...


@contextlib.contextmanager
def progress_bar(
    total: int, description: str, *, enabled: bool = True, transient: bool = False, show_loss: bool = False
) -> Iterator[Advance]:
    """A rich progress bar on stderr: description, bar, done/total, elapsed and remaining time (+ the last
    step's loss with `show_loss`).

    Args:
        total: steps (batches, images, persons) the bar counts to.
        description: text left of the bar.
        enabled: False yields a no-op and imports nothing (the bar is off for workers and tests).
        transient: remove the bar when the block ends (else it stays on the terminal).
        show_loss: add a ``loss 0.1234`` column, set by ``advance(loss)``.

    Yields:
        ``advance(loss=nan)``: one step done.
    """
    if not enabled:
        yield _no_op
        return
    from rich.console import Console  # lazy: rich (0.2 s), only for a progress bar
    from rich.progress import (  # lazy: rich, only for a progress bar
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns: list[ProgressColumn] = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    if show_loss:
        columns.append(TextColumn("loss {task.fields[loss]:.4f}"))
    with Progress(*columns, console=Console(stderr=True), transient=transient) as bar:
        task = bar.add_task(description, total=total, loss=math.nan)

        def step(loss: float = math.nan) -> None:
            bar.update(task, advance=1, loss=loss)

        yield step


def _no_op(loss: float = math.nan) -> None:
    return None


def read_text_file(path: Path, error: type[Exception], what: str, hint: str) -> str:
    """The text of a file a user names (a sweep file, a training config), or one line saying what is wrong.

    Args:
        path: the file. error: the exception class raised (a :class:`maskcls_hpo.errors.MaskclsError`).
        what: the kind of file in messages (``sweep file``). hint: what the file should be (``a sweep file is
            Python source, see sweeps/ for examples``).

    Raises:
        error: the file is missing, unreadable, not UTF-8 or holds NUL bytes (a binary file).
    """
    if not path.is_file():
        raise error(f"{path}: {what} not found ({hint})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{path}: not a text file (not UTF-8 at byte {err.start}); {hint}") from None
    except OSError as err:
        raise error(f"{path}: cannot read the {what}: {err.strerror or err}") from None
    if "\0" in text:
        raise error(f"{path}: not a text file (it holds NUL bytes); {hint}")
    return text


MAX_NAME_BYTES = 200
"""The longest name (UTF-8 bytes) used as one path component (file systems allow 255 bytes per name)."""


def check_path_name(name: str, option: str, error: type[Exception] = ValueError) -> str:
    """`name` (a study name, confirm ``--name``, a sweep's name) checked before it is used as one folder name.

    Refused: an empty name, ``.``, ``..`` anywhere in it (``..``, ``a..b``), a path separator (``/``, ``\\``,
    the system's), control characters (NUL, newline, ESC, ...; Unicode category ``Cc``) and names longer than
    :data:`MAX_NAME_BYTES`. Anyone who can name a study (a shared PostgreSQL study list included) could
    otherwise place files outside the storage folder (issue 25: ``--study "../../escape"``).

    Args:
        option: the option or field the name came from, for the message (``--study``).
        error: the exception class raised (a :class:`maskcls_hpo.errors.MaskclsError`, or ``ValueError`` inside
            a pydantic validator).

    Returns:
        `name` unchanged.

    Raises:
        error: one line naming `option`, the name (control characters escaped) and what is allowed.
    """
    shown = repr(name) if isinstance(name, str) else type(name).__name__
    why = ""
    if not isinstance(name, str) or name.strip() == "":
        why = "is empty"
    elif any(unicodedata.category(c) == "Cc" for c in name):
        why = "holds control characters"
    elif any(sep and sep in name for sep in ("/", "\\", os.sep, os.altsep)):
        why = "holds a path separator"
    elif name == ".":
        why = "is '.'"
    elif ".." in name:
        why = "holds '..'"
    elif len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        why = f"is longer than {MAX_NAME_BYTES} bytes"
    if why:
        raise error(
            f"{option} {shown} {why}; it names a folder: use letters, digits and '-', '_', '.' "
            "(no '/', '\\', '..' or control characters)"
        )
    return name


def path_under(root: str | os.PathLike[str], *parts: str, error: type[Exception] = ValueError) -> Path:
    """``root / parts...``, checked to stay inside `root` once resolved (``..`` and symbolic links followed).

    Every path built from a user's name goes through here after :func:`check_path_name`, so that a name that
    slipped past it (or a symbolic link inside `root`) cannot point outside.

    Raises:
        error: the path resolves outside `root` (one line naming both).
    """
    base = Path(root)
    path = base.joinpath(*parts)
    resolved_root, resolved = base.resolve(), path.resolve()
    if resolved != resolved_root and resolved_root not in resolved.parents:
        raise error(f"{path} resolves to {resolved}, outside {resolved_root}; refusing to write there")
    return path


def check_output_file(path: str | os.PathLike[str], flag: str, error: type[Exception]) -> Path:
    """`path` as an output file a user names (``--out``), refused before anything is computed or written.

    Args:
        path: the file to be written. flag: its name in messages (``--out``). error: the exception class
            raised (a :class:`maskcls_hpo.errors.MaskclsError`).

    Returns:
        `path` as a :class:`Path` (``~`` expanded).

    Raises:
        error: `path` is empty or blank, is a folder, or a folder above it is a file.
    """
    if str(path).strip() == "":
        raise error(f"{flag} is empty; give a file name")
    out = Path(path).expanduser()
    if out.is_dir():
        raise error(f"{flag} {out} is a folder; give a file name (in it, or elsewhere)")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise error(f"{flag} {out}: {parent} is not a folder (a file); pick another {flag}")
            break
    return out


def check_whole_number(value: int, flag: str, low: int, high: int, error: type[Exception]) -> int:
    """`value` if it is a whole number in ``[low, high]``, else one line naming `flag` and the range.

    Catches numbers no database column or NumPy seed takes (``--top 99999999999999999999``) before they
    reach one.

    Raises:
        error: `value` is not an int (a bool is not one), or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise error(f"{flag} must be a whole number from {low} to {high}, got {value!r}")
    return value


def check_cache_dir(cache_dir: str | os.PathLike[str], error: type[Exception]) -> Path:
    """`cache_dir` as a folder that is or can be made (:func:`check_output_folder` under the name ``cache_dir``).

    Raises:
        error: `cache_dir` is empty, is a file, or a folder above it is a file.
    """
    return check_output_folder(cache_dir, "cache_dir", error)


def check_output_folder(path: str | os.PathLike[str], flag: str, error: type[Exception]) -> Path:
    """`path` as an output folder a user names (``train --out``): empty, a file, or under a file is refused.

    Raises:
        error: one line naming `flag`.
    """
    if str(path).strip() == "":
        raise error(f"{flag} is empty; give a folder")
    folder = Path(path).expanduser()
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                raise error(f"{flag} {folder}: {parent} is a file, not a folder; give a folder")
            break
    return folder


DISK_FULL = "disk-full"
"""The reason stored on a trial that failed because a disk was full (``disk-full: FOLDER has N MiB free``)."""

_DISK_FULL_TEXT = ("no space left on device", "database or disk is full", "disk quota exceeded")
# torch.save on a full disk: "[enforce fail at inline_container.cc:...] . unexpected pos 64 vs 0" (PyTorch's zip
# writer checks its own position); counted as a full disk only when the folder has little space left
_TORCH_WRITE_FAILED = ("unexpected pos", "enforce fail at inline_container")
_LOW_FREE_BYTES = 16 * 2**20


def free_bytes(folder: str | os.PathLike[str]) -> int:
    """Free bytes for an unprivileged user on the file system of `folder` (its nearest existing parent)."""
    path = Path(folder).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack: list[BaseException | None] = [err]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack += [e.__cause__, e.__context__, getattr(e, "orig", None)]


def disk_full_reason(err: BaseException, folders: Sequence[str | os.PathLike[str]]) -> str | None:
    """``disk-full: FOLDER has N MiB free`` when `err` (or an error it was raised from) is a full disk, else None.

    A full disk is ``OSError`` ENOSPC / EDQUOT, SQLite's "database or disk is full", or torch.save's "unexpected
    pos" while one of `folders` has under 16 MiB free. The folder named is the one of the failed file when the
    error names it, else the one of `folders` with the least free space (:func:`shutil.disk_usage`).
    """
    named: Path | None = None
    full = False
    for e in _chain(err):
        text = str(e).lower()
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            full, named = True, Path(e.filename).parent if e.filename else named
        elif any(marker in text for marker in _DISK_FULL_TEXT):
            full = True
        elif any(marker in text for marker in _TORCH_WRITE_FAILED):
            full = full or any(free_bytes(f) < _LOW_FREE_BYTES for f in folders)
    if not full:
        return None
    folder = named if named is not None else min((Path(f) for f in folders), key=free_bytes, default=Path("."))
    return f"{DISK_FULL}: {folder} has {free_bytes(folder) / 2**20:.1f} MiB free"


def full_folder(folders: Sequence[str | os.PathLike[str]], below: int = 2**20) -> str | None:
    """``disk-full: FOLDER has N MiB free`` for the first of `folders` with under `below` bytes free, else None.

    For a process that saw another one fail without a readable reason (its log was on the full disk too).
    """
    for folder in folders:
        free = free_bytes(folder)
        if free < below:
            return f"{DISK_FULL}: {folder} has {free / 2**20:.1f} MiB free"
    return None

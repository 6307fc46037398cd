"""Writing files atomically: a temporary file beside the target, flushed to disk, then renamed
into place, so a failed or interrupted write leaves any previous file untouched. Every module
that saves something (transcoders, graphs, pages, checkpoints, caches, metrics) writes
through here.

An artefact of several files is one unit: either everything lives in one file (a transcoder's
config and a graph's node table travel inside their safetensors file's header; the JSON files
beside them are readable copies), or the files are written into a temporary sibling directory
that is swapped into place in one step (checkpoints). Writers of one destination are serialised
by `locked` (an exclusive lock on a `.NAME.lock` file beside it), and the temporaries a killed
writer left are removed by the next writer (`clean_temporaries`).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tl_clt.errors import FileWriteError, TLCLTError

#: Temporaries are named `.NAME.<random>.tmp`; a writer removes those older than this (seconds)
#: that no lock holder owns.
STALE_SECONDS = 60.0


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _umask_mode()


def write_error(path: Path, exc: OSError) -> FileWriteError:
    """A `FileWriteError` naming `path` and what to do about `exc`."""
    hint = {
        errno.ENOSPC: "the disk is full; free some space and save again",
        errno.EDQUOT: "the disk quota is exceeded; free some space and save again",
        errno.EROFS: "the file system is read-only; choose another directory",
        errno.EACCES: "permission denied; choose a directory you can write to",
        errno.EPERM: "permission denied; choose a directory you can write to",
        errno.ENOTDIR: "a part of the path is a file, not a directory",
        errno.EISDIR: "the path is a directory",
    }.get(exc.errno or 0, "check the path and try again")
    return FileWriteError(
        exc.errno, f"cannot write {path}: {exc.strerror or exc}; {hint}", str(path)
    )


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it into place, so a
    failure leaves any previous `path` untouched (and no temporary behind). The file gets the
    usual permissions (0644 under the default umask). OSErrors become `FileWriteError`s."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise write_error(path, exc) from exc
    try:
        write(Path(tmp))
        os.chmod(tmp, _FILE_MODE)  # after writing: some writers replace the file they are given
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, TLCLTError):
            raise write_error(path, exc) from exc
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@contextmanager
def locked(path: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive lock for writing `path` (a `.NAME.lock` file beside it) while the
    block runs: writers of one destination take turns. With `timeout` (seconds), waiting longer
    raises a `FileWriteError` saying another process is writing there."""
    path = Path(path)
    lock = path.parent / f".{path.name}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, _FILE_MODE)
    except OSError as exc:
        raise write_error(path, exc) from exc
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:  # type: ignore[operator]
                    raise FileWriteError(
                        errno.EBUSY,
                        f"another process is writing {path} (it holds {lock}); wait for it to "
                        "finish or choose another path",
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def clean_temporaries(directory: Path, name: str, older_than: float = 0.0) -> None:
    """Remove the temporaries (`.NAME.*.tmp`, files or directories) that interrupted writes of
    `directory/NAME` left behind; call it holding `locked(directory / NAME)`."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    now = time.time()
    for tmp in directory.glob(f".{name}.*.tmp"):
        try:
            if now - tmp.lstat().st_mtime < older_than:
                continue
        except OSError:
            continue
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def temporary_dir(final: Path) -> Path:
    """A new empty directory beside `final` for writing its next version."""
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    except OSError as exc:
        raise write_error(final, exc) from exc


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(tmp: Path, final: Path) -> None:
    """Put the complete directory `tmp` in the place of `final` (which may exist): a reader
    sees the old or the new directory, never a mix. Where the system cannot swap two paths in
    one step, `final` is absent for an instant between two renames (never half-written)."""
    tmp, final = Path(tmp), Path(final)
    fsync_dir(tmp)
    if final.exists():
        if _exchange(tmp, final):
            shutil.rmtree(tmp, ignore_errors=True)  # now the old version
        else:
            old = final.parent / f".{final.name}.{os.getpid()}-old.tmp"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""One writer per output: the lock that `build`, `train`, `pretrain`, `eval` and `summarize` hold on what they write.

`hold_output(path, flag)` takes an exclusive `flock` on `.<name>.lock` beside the output (a file or a folder) and
writes who holds it (pid, host, start time, command) into it. A second command writing the same output (the same
file or folder, however it is spelled: symlinks resolved) finds the lock taken and is refused with `OutputInUse`,
a one-line message naming the holder. The kernel drops an flock when its process ends, however it ends, so a
crash leaves at most an unlocked file that the next command takes over: nothing stays stuck. A clean release
deletes the file (and the folders it had to create for it, when empty).

Under torchrun / accelerate launch only the first process (RANK 0) locks: the others write their parts of the
same run and wait for it at its barriers. Where the lock cannot be made (a read-only parent folder, a file
system without flock, an output that is a pipe or a device such as /dev/stdout) the command runs unlocked, as
it did before, and says so in its log (info: the command's own error, if any, stays the one line).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

logger = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"


class OutputInUse(RuntimeError):
    """Another process holds the lock of the output this command would write."""


class OutputLock:
    """A held lock (`hold_output`); `release()` drops it, deletes its file and the folders made for it."""

    def __init__(self, path: Path, descriptor: int, made: list[Path]) -> None:
        self.path, self._descriptor, self._made = path, descriptor, made

    def release(self) -> None:
        if self._descriptor < 0:
            return
        try:
            self.path.unlink()  # while still held: a process waiting on the old file then sees it is gone
        except OSError:
            pass
        os.close(self._descriptor)  # closing drops the flock
        self._descriptor = -1
        for folder in self._made:  # innermost first
            try:
                folder.rmdir()
            except OSError:
                break  # not empty (the command wrote there) or already gone


def lock_path(output: str | os.PathLike) -> Path:
    """`.<name>.lock` beside `output`, symlinks resolved: two spellings of one output share one lock."""
    target = Path(os.path.realpath(Path(output).expanduser()))
    return target.with_name(f".{target.name}{LOCK_SUFFIX}")


def hold_output(output: str | os.PathLike, flag: str, command: str) -> OutputLock | None:
    """Lock `output` for this process, or raise `OutputInUse` naming the process that holds it (`flag`: the option
    that named the output, `command`: this command's name, both for the messages). None: nothing to lock (not the
    first process, or a pipe or device output) or the lock could not be made (logged)."""
    import fcntl

    if os.environ.get("RANK", "0") != "0":
        return None
    target = Path(os.path.realpath(Path(output).expanduser()))
    if target.exists() and not (target.is_file() or target.is_dir()):
        return None  # /dev/stdout, a pipe, a terminal: nothing there to keep whole
    path = lock_path(output)
    made = _missing_folders(path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                raise OutputInUse(_in_use_message(output, flag, path)) from None
            except BaseException:
                os.close(descriptor)
                raise
            if _same_file(descriptor, path):
                break
            os.close(descriptor)  # its holder released (and deleted) it between our open and flock: take the new one
    except OSError as exc:  # read-only, full, no flock, a symlink loop: the command meets (and reports) it itself
        _remove(made)
        logger.info("%s %s is not locked against a second writer: %s (%s)", flag, output, path, exc.strerror)
        return None
    try:
        _write_holder(descriptor, command)
    except OSError:  # a full disk: the lock holds all the same, its holder is then unnamed
        pass
    return OutputLock(path, descriptor, made)


def _missing_folders(folder: Path) -> list[Path]:
    """The folders from `folder` up that do not exist yet, innermost first (made for the lock, removed after)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        held, now = os.fstat(descriptor), os.stat(path)
    except FileNotFoundError:
        return False
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


def _write_holder(descriptor: int, command: str) -> None:
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": f"mega2bart {command}",
    }
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, (json.dumps(holder) + "\n").encode(), 0)


def _in_use_message(output: str | os.PathLike, flag: str, path: Path) -> str:
    holder = {}
    for _ in range(20):  # the holder writes its name just after it locks: give it a moment
        try:
            holder = json.loads(path.read_text(encoding="utf-8"))
            break
        except (OSError, ValueError):
            time.sleep(0.05)
    if isinstance(holder, dict) and {"pid", "host", "started"} <= set(holder):
        command = f"`{holder['command']}`, " if holder.get("command") else ""
        who = f"{command}pid {holder['pid']} on {holder['host']}, started {holder['started']}"
    else:
        who = "a process that did not say who it is"
    return (
        f"{flag} {os.fspath(output)!r} is being written by another process ({who}; lock file {str(path)!r}): "
        "wait for it to finish, or pass another path"
    )


__all__ = ["LOCK_SUFFIX", "OutputInUse", "OutputLock", "hold_output", "lock_path"]

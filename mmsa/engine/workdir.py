"""One training run per work dir, and a clear end when the disk fills.

Two runs writing into one work dir interleave their logs and overwrite each
other's checkpoints and results. The first run therefore holds an exclusive
``flock`` on ``WORK_DIR/.mmsa-run.lock`` for its whole life, with its pid,
host, start time and command written inside; a second run finds the lock
taken and stops, naming the first. The kernel releases the lock when its
process ends in any way (``kill -9`` included), so it never stays stuck and
``--resume`` after a crash just works. The file itself stays behind: an
unlocked file is not a busy work dir.

Only training takes the lock: ``tools/test.py`` writes nothing a training
run reads, and evaluating a checkpoint while its run goes on (both in the
default work dir) is common.
"""
import errno
import json
import logging
import os
import os.path as osp
import socket
import sys
import time
import zipfile
from typing import Dict, Optional

from ..errors import WorkDirBusyError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, no check
    fcntl = None

LOCK_FILE = '.mmsa-run.lock'
# errnos that mean "the file system refused more bytes"; mmengine reports
# them as a raw OSError from whichever file it was writing.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# flock failures of file systems without locking (e.g. NFS without lockd)
NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)

# Lock files held by this process: the descriptors must stay open (closing
# one releases its lock) until the process ends.
_HELD: Dict[str, int] = {}


def _describe(path: str) -> str:
    try:
        with open(path) as f:
            holder = json.load(f)
        return (f'pid {holder["pid"]} on {holder["host"]}, started '
                f'{holder["started"]}: {holder["command"]}')
    except (OSError, ValueError, KeyError, TypeError):
        # the holder is between taking the lock and writing its details
        return 'a run that is just starting'


def lock_work_dir(work_dir: str) -> Optional[str]:
    """Create ``work_dir`` if needed and hold its run lock.

    Args:
        work_dir (str): The run's work dir.

    Returns:
        str | None: The lock file's path; None where the platform
        (Windows) or the file system has no ``flock``: the check is skipped,
        with a warning for the file system.

    Raises:
        WorkDirBusyError: Another process holds the lock; the message
            names it (pid, host, start time, command).
    """
    os.makedirs(work_dir, exist_ok=True)
    path = osp.abspath(osp.join(work_dir, LOCK_FILE))
    if fcntl is None or path in _HELD:
        return path if fcntl is not None else None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in NO_LOCKS:
            from mmengine.logging import print_log
            print_log(f'{work_dir}: the file system does not support locks '
                      f'({os.strerror(err.errno)}); nothing stops a second '
                      f'run from writing into this work dir',
                      logger='current', level=logging.WARNING)
            return None
        if err.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            raise
        raise WorkDirBusyError(
            f'work dir {work_dir} is in use by another run ({_describe(path)}'
            f'); wait for it to end, stop it, or give this run another '
            f'--work-dir') from None
    holder = dict(pid=os.getpid(), host=socket.gethostname(),
                  started=time.strftime('%Y-%m-%d %H:%M:%S %Z'),
                  command=' '.join([sys.executable] + sys.argv))
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(holder).encode())
    _HELD[path] = fd
    return path


def unlock_work_dir(work_dir: str) -> None:
    """Release the lock :func:`lock_work_dir` took (process exit does too).
    """
    fd = _HELD.pop(osp.abspath(osp.join(work_dir, LOCK_FILE)), None)
    if fd is not None:
        os.close(fd)


def disk_full_message(err: OSError, work_dir: Optional[str],
                      since: float) -> str:
    """Explain a write the file system refused; remove the checkpoints it
    left incomplete.

    torch writes a checkpoint as a zip archive whose directory comes last,
    so a ``*.pth`` written since ``since`` that is not a readable zip is an
    incomplete one. mmengine updates ``last_checkpoint`` only after a
    checkpoint is complete, so it still names a whole file.

    Args:
        err (OSError): The error, with ``errno`` in :data:`DISK_FULL`.
        work_dir (str, optional): The run's work dir.
        since (float): When the run started (``time.time()``).

    Returns:
        str: One line: what failed, what was removed, what to do.
    """
    what = os.strerror(err.errno)
    fix = ('free space (or raise the quota or file size limit) and '
           'continue the run with --resume')
    if not work_dir or not osp.isdir(work_dir):
        return f'{what} while writing {err.filename or "a file"}; {fix}'
    last = None
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            last = f.read().strip() or None
    ckpt_dir = osp.dirname(last) if last else work_dir
    partial = sorted(
        osp.join(ckpt_dir, name) for name in os.listdir(ckpt_dir)
        if name.endswith('.pth')
        and osp.getmtime(osp.join(ckpt_dir, name)) >= since
        and not zipfile.is_zipfile(osp.join(ckpt_dir, name)))
    for path in partial:
        os.remove(path)
    removed = (f'; removed the incomplete {", ".join(partial)}'
               if partial else '')
    kept = (f'last_checkpoint names {last}, which is complete'
            if last else 'no checkpoint was complete yet')
    return f'{what} while writing in {work_dir}{removed}; {kept}; {fix}'

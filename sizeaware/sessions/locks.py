"""Byte-range locks on a file, coherent across processes and threads.

Two Glance API processes (or nodes sharing the spool directory over NFSv4
or CephFS) must agree on who is writing which bytes of a session, so the
locks are ``fcntl`` record locks held by the kernel (and by the NFS lock
manager), never in-process locks. They are open-file-description locks
(``F_OFD_SETLK``, Linux 3.15 and later, the POSIX 2024 ``F_OFD_*``): unlike
classic POSIX locks they belong to the open file, not to the process, so
two threads of one uwsgi worker, each with its own descriptor, exclude each
other too, and closing any descriptor of the file does not drop another's
lock.

A lock is released when its descriptor is closed, also when the process
dies: a killed worker never leaves a session locked.
"""

import errno
import fcntl
import os
import struct

# Linux's numbers, for Pythons whose fcntl module does not name them.
_F_OFD_GETLK = getattr(fcntl, 'F_OFD_GETLK', 36)
_F_OFD_SETLK = getattr(fcntl, 'F_OFD_SETLK', 37)
_F_OFD_SETLKW = getattr(fcntl, 'F_OFD_SETLKW', 38)
# struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks),
# padded to its size on 64-bit Linux.
_FLOCK = 'hhqqi4x'


def _call(fd, command, kind, start, length):
    arg = struct.pack(_FLOCK, kind, os.SEEK_SET, start, length, 0)
    return struct.unpack(_FLOCK, fcntl.fcntl(fd, command, arg))


def acquire(fd, start, length, exclusive=True):
    """Wait for and take a lock on ``length`` bytes from ``start``."""
    kind = fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK
    _call(fd, _F_OFD_SETLKW, kind, start, length)


def try_acquire(fd, start, length, exclusive=True):
    """Take the lock if nobody holds a conflicting one; whether it did."""
    kind = fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK
    try:
        _call(fd, _F_OFD_SETLK, kind, start, length)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def release(fd, start, length):
    _call(fd, _F_OFD_SETLK, fcntl.F_UNLCK, start, length)


def held_by_another(fd, start, length):
    """Whether another open file holds an exclusive lock on any of these
    bytes; asks without taking anything."""
    kind = _call(fd, _F_OFD_GETLK, fcntl.F_RDLCK, start, length)[0]
    return kind != fcntl.F_UNLCK

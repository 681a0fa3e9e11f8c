"""Two small binary logs that make a session's bytes durable and checkable.

The pieces log (``pieces``)
    one entry per claim: the byte range claimed and its CRC-32C, appended
    and synced only after the bytes themselves were synced. The held
    ranges are the union of its entries, so it never claims a byte that is
    not on disk, and each entry lets a client check what the session holds
    against its own file (the status document lists them). Each entry
    carries a CRC of itself: an entry torn by a crash is the log's end, and
    the next claim writes over it.
A writer's journal (``journal.<uuid>``)
    one per request writing bytes, locked by it for as long as it lives:
    where its bytes began since its last claim, then after each piece the
    end reached and the running CRC-32C from that beginning. A worker
    killed mid-write claims nothing more; the next request finds the
    journal unlocked and claims the longest prefix whose CRC the data file
    still matches. CRC-32C is computed in hardware (the ``crc32c``
    package), so the journal costs a writer next to nothing.
"""

import os
import struct

import crc32c

from sizeaware.sessions import locks

PIECES = 'pieces'
JOURNAL_PREFIX = 'journal.'
# A pieces entry: start, end, CRC-32C of the bytes, CRC-32C of the entry.
_PIECE = struct.Struct('<QQII')
_PIECE_BODY = struct.Struct('<QQI')
# A journal: the absolute offset its entries start from, then per piece
# the absolute end and the running CRC-32C since that offset.
_JOURNAL_START = struct.Struct('<Q')
_JOURNAL_ENTRY = struct.Struct('<QI')
#: How much of a data file is read at a time to check a journal.
_CHECK_BYTES = 1024 * 1024


def write_all(fd, data, offset):
    """``pwrite`` all of ``data`` at ``offset``."""
    with memoryview(data) as view:
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written


# -- the pieces log ----------------------------------------------------------


def read_pieces(path):
    """``[(start, end, crc), ...]`` of the pieces log at ``path``, in the
    order claimed; ``[]`` when there is none."""
    try:
        with open(path, 'rb') as f:
            content = f.read()
    except FileNotFoundError:
        return []
    return _valid_pieces(content)[0]


def append_piece(path, start, end, crc):
    """Append a claim, durably; over a torn last entry if a crash left
    one."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        size = os.fstat(fd).st_size
        valid = _valid_pieces(os.pread(fd, size, 0))[1]
        body = _PIECE_BODY.pack(start, end, crc)
        write_all(fd, body + struct.pack('<I', crc32c.crc32c(body)), valid)
        if valid + _PIECE.size < size:
            os.ftruncate(fd, valid + _PIECE.size)
        os.fsync(fd)
    finally:
        os.close(fd)


def clear_pieces(path):
    """Claim nothing any more (the data is about to go)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _valid_pieces(content):
    pieces = []
    at = 0
    while at + _PIECE.size <= len(content):
        start, end, crc, own = _PIECE.unpack_from(content, at)
        if crc32c.crc32c(content[at:at + _PIECE_BODY.size]) != own:
            break
        pieces.append((start, end, crc))
        at += _PIECE.size
    return pieces, at


# -- a writer's journal ------------------------------------------------------


class Journal:
    """A writer's journal, created locked in ``directory``.

    Named for others to recover only once it is locked, and removed by
    :meth:`close` (whatever the writer claimed it has claimed by then).
    """

    def __init__(self, directory, name, start):
        self.path = os.path.join(directory, JOURNAL_PREFIX + name)
        hidden = os.path.join(directory, '.new-' + JOURNAL_PREFIX + name)
        self.fd = os.open(hidden, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            locks.acquire(self.fd, 0, 0)
            self.reset(start)
            os.rename(hidden, self.path)
        except BaseException:
            os.close(self.fd)
            os.unlink(hidden)
            raise

    def reset(self, start):
        """Empty it: its pieces are claimed; the next begin at
        ``start``."""
        os.ftruncate(self.fd, 0)
        write_all(self.fd, _JOURNAL_START.pack(start), 0)
        self._at = _JOURNAL_START.size

    def append(self, end, crc):
        write_all(self.fd, _JOURNAL_ENTRY.pack(end, crc), self._at)
        self._at += _JOURNAL_ENTRY.size

    def close(self):
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(self.fd)


def journals(directory):
    """The paths of the writers' journals in ``directory``."""
    return [os.path.join(directory, name) for name in os.listdir(directory)
            if name.startswith(JOURNAL_PREFIX)]


def recover(path, data, size):
    """What the dead writer of the journal at ``path`` left in ``data``
    (:mod:`~sizeaware.sessions.storage.blocks`).

    :returns: ``(start, end, crc)`` of the bytes to claim, None when there
        are none; None also while the writer lives (its lock is held). A
        journal recovered is removed, after the data it names was synced.
    """
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        if not locks.try_acquire(fd, 0, 0):
            return None  # its writer is alive
        content = os.pread(fd, 1 << 24, 0)
        found = None
        if len(content) >= _JOURNAL_START.size:
            found = _longest_valid(content, data, size)
        if found is not None:
            data.sync()
        os.unlink(path)
        return found
    finally:
        os.close(fd)


def _longest_valid(content, data, size):
    start = end = _JOURNAL_START.unpack_from(content)[0]
    crc = good_crc = 0
    for at in range(_JOURNAL_START.size,
                    len(content) - _JOURNAL_ENTRY.size + 1,
                    _JOURNAL_ENTRY.size):
        piece_end, expected = _JOURNAL_ENTRY.unpack_from(content, at)
        if not end < piece_end <= size:
            break
        position = end
        while position < piece_end:
            piece = data.pread(min(_CHECK_BYTES, piece_end - position),
                               position)
            if not piece:
                break
            crc = crc32c.crc32c(piece, crc)
            position += len(piece)
        if position != piece_end or crc != expected:
            break
        end, good_crc = piece_end, crc
    return (start, end, good_crc) if end > start else None

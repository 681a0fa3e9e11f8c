"""The spool's writer: a request body into a session's bytes (a data file
in the spool, or the store's object: :mod:`~sizeaware.sessions.storage.
blocks`), each piece at its offset, compared with the bytes already held,
journalled, and claimed at checkpoints."""

import errno

import crc32c

from sizeaware import exceptions
from sizeaware.sessions import ranges
from sizeaware.sessions import storage

#: A long write is made durable and claimed every this many bytes, so a
#: killed worker loses at most this much of what it had received.
CHECKPOINT_BYTES = 16 * 1024 * 1024


class SpoolWriter(storage.Writer):
    """The stream base, writing each piece of a request body into a
    session's data file at its offset.

    Bytes the session already holds are compared rather than trusted: a
    piece that differs from them raises
    :class:`~sizeaware.exceptions.UploadConflict` before it is written.
    Every :data:`CHECKPOINT_BYTES` the bytes written so far are synced and
    claimed through ``checkpoint(start, end, crc)``; :meth:`unclaimed` is
    what is left for the request's own last claim.
    """

    def __init__(self, pull, expected=None, delimited=False, *, data, start,
                 held, checkpoint=None, journal=None, **kwargs):
        super().__init__(pull, expected, delimited, **kwargs)
        self.data = data
        self.start = start
        self.held = held
        self._checkpoint = checkpoint
        self._claimed = 0
        self._crc = 0
        self._journal = journal

    def store(self, data):
        position = self.start + self.received
        with memoryview(data) as view:
            for first, end in ranges.overlaps(self.held, position,
                                              position + len(view)):
                have = self.data.pread(end - first, first)
                if have != view[first - position:end - position]:
                    raise exceptions.UploadConflict(
                        'Bytes %d-%d differ from the bytes already received '
                        'for this image.' % (first, end - 1))
            crc = crc32c.crc32c(view, self._crc)
            try:
                self.data.pwrite(view, position)
                if self._journal is not None:
                    self._journal.append(position + len(view), crc)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                raise exceptions.SpoolFull(
                    'The upload spool\'s disk is full: %s. What was '
                    'written before is kept.' % exc.strerror) from exc
            self._crc = crc
        written = self.received + len(data)
        if (self._checkpoint is not None
                and written - self._claimed >= CHECKPOINT_BYTES):
            self.data.sync()
            self._checkpoint(self.start + self._claimed,
                             self.start + written, self._crc)
            self._claimed, self._crc = written, 0
            if self._journal is not None:
                self._journal.reset(self.start + written)

    def unclaimed(self):
        return (self.start + self._claimed, self.start + self.received,
                self._crc)

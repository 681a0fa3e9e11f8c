"""Request bodies read from a file, on the one stream base."""

import os

from sizeaware import stream
from sizeaware.client import errors


class FileSpan(stream.BodyStream):
    """Bytes ``[start, stop)`` of the file open as ``fd``, as a request
    body of known length: every piece goes through ``on_bytes`` (digests,
    progress) as it is handed to the connection.

    ``len()`` and ``tell()`` answer what requests asks to frame the body
    with ``Content-Length`` rather than chunked.
    """

    #: Bytes read from the file at a time; the connection takes them in
    #: smaller pieces, uncopied where it can.
    PIECE = 1 << 20

    def __init__(self, fd, start, stop, on_bytes=None):
        self._fd = fd
        self._position = start
        self._stop = stop
        self._on_bytes = on_bytes
        super().__init__(self._pull_file, expected=stop - start,
                         delimited=True)

    def _pull_file(self, hint):
        count = min(max(hint, self.PIECE), self._stop - self._position)
        if count <= 0:
            return b''
        data = os.pread(self._fd, count, self._position)
        if not data:
            raise errors.TransferError(
                'the file ends at byte %d, before its size: it changed '
                'during the upload' % self._position)
        self._position += len(data)
        return data

    def chunk_update(self, data):
        if self._on_bytes is not None:
            self._on_bytes(data)

    def __len__(self):
        return self.expected - self.received

    def tell(self):
        return 0

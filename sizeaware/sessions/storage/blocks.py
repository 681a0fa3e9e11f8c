"""A session's bytes, read and written at offsets, wherever they live.

The session code (:mod:`~sizeaware.sessions.storage.spool`,
:mod:`~sizeaware.sessions.storage.spool_writer`,
:mod:`~sizeaware.sessions.journal`) reads, writes and syncs bytes at
offsets and never asks where they are: a file in the spool
(:class:`LocalFile`), or an RBD image in the store the image goes to
(:class:`~sizeaware.sessions.storage.in_store.RBDImage`), behind the same
five methods.
"""

import os


class LocalFile:
    """A file, by path, read and written with ``pread``/``pwrite``.

    :raises FileNotFoundError: when there is none.
    """

    def __init__(self, path, writable=True):
        self.fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)

    def pread(self, length, offset):
        return os.pread(self.fd, length, offset)

    def pwrite(self, data, offset):
        """Write all of ``data`` at ``offset``."""
        with memoryview(data) as view:
            while view:
                written = os.pwrite(self.fd, view, offset)
                view, offset = view[written:], offset + written

    def sync(self):
        os.fsync(self.fd)

    def size(self):
        return os.fstat(self.fd).st_size

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

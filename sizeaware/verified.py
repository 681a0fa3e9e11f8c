"""A whole-image download checked against the image's checksum as it
streams out.

The store's pieces pass through the stream base
(:class:`sizeaware.stream.BodyStream`) as a chunk source: each is hashed
in :meth:`VerifyingStream.chunk_update` and handed on uncopied. The body
must end exactly at the image's size, and the base proves that before the
last byte goes; the hash is compared as the last piece is about to be
handed on. Either failing raises
:class:`~sizeaware.exceptions.DownloadCorrupt` in place of the last piece:
the WSGI server, which sent ``Content-Length`` with the status line, then
breaks the connection, so the client holds a short body, never a
complete-looking wrong image.
"""

from sizeaware import digests
from sizeaware import exceptions
from sizeaware import stream


def new_hash(algorithm):
    """A hashlib object for ``algorithm`` (an ``os_hash_algo`` or
    ``md5``, :func:`sizeaware.digests.new`), or None when this Python
    lacks it."""
    try:
        return digests.new(algorithm)
    except ValueError:
        return None


class VerifyingStream(stream.BodyStream):
    """The stream base over an ``app_iter``, hashing every piece and
    comparing the digest before the last byte is delivered.

    :param hexdigest: the expected digest, lower-case hex.
    """

    def __init__(self, pull, expected, hasher, hexdigest):
        super().__init__(pull, expected)
        self.hasher = hasher
        self.hexdigest = hexdigest

    def chunk_update(self, data):
        self.hasher.update(data)
        if self.received + len(data) == self.expected:
            found = self.hasher.hexdigest()
            if found != self.hexdigest:
                raise exceptions.DownloadCorrupt(
                    'The image data differs from its recorded %s: %s '
                    'instead of %s.' % (self.hasher.name, found,
                                        self.hexdigest), self.received)


class VerifiedBody:
    """The ``app_iter`` of a whole-image download, verified.

    :param app_iter: the application's; closed by :meth:`close`.
    :param on_error: called once with the
        :class:`~sizeaware.exceptions.DownloadCorrupt` before it is
        raised (to log it).
    """

    def __init__(self, app_iter, size, hasher, hexdigest, on_error):
        self._app_iter = app_iter
        self._pieces = iter(app_iter)
        self._stream = VerifyingStream(self._pull, size, hasher, hexdigest)
        self._on_error = on_error

    def _pull(self, hint):
        # An app_iter may yield empty pieces; to the stream b'' is the end.
        for piece in self._pieces:
            if piece:
                return piece
        return b''

    def __iter__(self):
        return self

    def __next__(self):
        body = self._stream
        try:
            data = body.read1()
        except exceptions.SizeawareError as error:
            if error is body.error and isinstance(
                    error, exceptions.DownloadCorrupt):
                raise  # told already; raised again by a later call
            corrupt = error
            if not isinstance(error, exceptions.DownloadCorrupt):
                corrupt = exceptions.DownloadCorrupt(
                    'The image data does not have the image\'s size %d '
                    'bytes: %s' % (body.expected, _reason(error, body)),
                    body.received)
            body.error = corrupt
            self._on_error(corrupt)
            raise corrupt from (None if corrupt is error else error)
        if not data:
            raise StopIteration
        return data

    def close(self):
        self._stream.close()
        close = getattr(self._app_iter, 'close', None)
        if close is not None:
            close()


def _reason(error, body):
    if isinstance(error, exceptions.BodyTooLong):
        return 'the store handed back more.'
    if isinstance(error, exceptions.ClientDisconnected):
        return 'the store\'s read failed after %d bytes (%s).' % (
            body.received, error)
    return 'the store handed back %d bytes.' % body.received

"""The one body reader: counts an upload and holds it to its declared size.

:class:`SizedBodyReader` sits between the WSGI server and the application
as ``wsgi.input``. It hands on exactly the bytes that arrive, without
copying a chunk the caller takes whole and without keeping more than one
read back, and it raises a :class:`~sizeaware.exceptions.BodySizeMismatch`
as soon as the body proves to be shorter or longer than declared:

* longer: no byte past the declared size is ever delivered. Once the count
  reaches the declared size the reader proves that the body ends there,
  because the application downstream, told ``CONTENT_LENGTH``, stops
  reading at that length and would never see the excess;
* shorter: the body ended, or the connection broke, first.

The first error is kept in :attr:`SizedBodyReader.error` and raised again on
every later call, so the filter knows the outcome whatever the application
did with the exception.

:func:`open_body` chooses where the bytes come from. A chunked body under
uwsgi does not arrive through ``wsgi.input`` at all but through
``uwsgi.chunked_read()``, which is also what Glance reads unless told the
body has a length; so the filter reads it itself and presents the
application with a length-framed body that can only be read through here.
"""

import io

from sizeaware import exceptions

#: How much to ask a source for when the caller does not say.
DEFAULT_READ_SIZE = 64 * 1024


class SizedBodyReader(io.RawIOBase):
    """A file-like body that must be exactly ``declared`` bytes long.

    :param pull: ``pull(hint) -> bytes``, the next piece of the body, of at
        most ``hint`` bytes for a stream or of any size for a chunk source;
        ``b''`` at the end. May raise ``OSError`` when the client goes away.
    :param declared: the size the client declared.
    :param delimited: True when the server's framing already stops the body
        at ``declared`` bytes (a Content-Length body), so there is nothing
        past the end to look for.
    """

    def __init__(self, pull, declared, delimited):
        super().__init__()
        self._pull = pull
        self.declared = declared
        self.received = 0
        self.error = None
        self._delimited = delimited
        self._ended = False
        # Bytes pulled but not yet delivered: the rest of one chunk, never
        # more, kept in place (chunk and offset) so small reads do not copy
        # what they leave behind.
        self._chunk = b''
        self._offset = 0

    def readable(self):
        return True

    def read(self, size=-1):
        """Up to ``size`` bytes; fewer only at the end of the body.

        A short read would mean the end of the body to its consumer (webob
        takes one for a client disconnect), so pieces are pulled until
        ``size`` is met. A piece that alone satisfies the read is returned
        as it came, uncopied.
        """
        if size is None or size < 0:
            return self.readall()
        pieces = []
        wanted = size
        while wanted:
            available = self._available(wanted)
            if not available:
                break
            piece = self._consume(min(wanted, available))
            pieces.append(piece)
            wanted -= len(piece)
        if len(pieces) == 1:
            return pieces[0]
        return b''.join(pieces)

    def readall(self):
        pieces = []
        while True:
            piece = self.read(DEFAULT_READ_SIZE)
            if not piece:
                return b''.join(pieces)
            pieces.append(piece)

    def readinto(self, buffer):
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def readline(self, size=-1):
        pieces = []
        wanted = None if size is None or size < 0 else size
        while wanted is None or wanted > 0:
            available = self._available(
                DEFAULT_READ_SIZE if wanted is None else wanted)
            if not available:
                break
            limit = available if wanted is None else min(wanted, available)
            newline = self._chunk.find(b'\n', self._offset,
                                       self._offset + limit)
            take = limit if newline < 0 else newline + 1 - self._offset
            pieces.append(self._consume(take))
            if newline >= 0:
                break
            if wanted is not None:
                wanted -= take
        return b''.join(pieces)

    def _available(self, size):
        """How many bytes can be delivered next; 0 at the end.

        Pulls from the source only when nothing is pending, asking for no
        more than the declared size still allows.
        """
        if self.error is not None:
            raise self.error
        remaining = self.declared - self.received
        if remaining == 0:
            self._prove_end()
            return 0
        if size == 0:
            return 0
        if self._offset == len(self._chunk):
            data = self._pull_or_fail(min(size, remaining))
            if not data:
                self._fail(exceptions.BodyTooShort(
                    self.declared, self.received))
            self._chunk, self._offset = data, 0
        return min(len(self._chunk) - self._offset, remaining)

    def _consume(self, count):
        """Deliver ``count`` pending bytes, checking the end when reached."""
        chunk, start = self._chunk, self._offset
        if start == 0 and count == len(chunk):
            data = chunk
        else:
            data = chunk[start:start + count]
        self._offset = start + count
        self.received += count
        if self.received == self.declared:
            self._prove_end()
        return data

    def _prove_end(self):
        """Make sure the body holds no byte past the declared size."""
        if self._ended:
            return
        if self._offset < len(self._chunk) or (
                not self._delimited and self._pull_or_fail(1)):
            self._fail(exceptions.BodyTooLong(self.declared))
        self._ended = True
        self._chunk, self._offset = b'', 0

    def _pull_or_fail(self, hint):
        try:
            return self._pull(hint)
        except OSError as exc:
            self._fail(exceptions.ClientDisconnected(
                self.declared, self.received, str(exc) or type(exc).__name__))

    def _fail(self, error):
        self.error = error
        self._chunk, self._offset = b'', 0
        raise error


def _uwsgi_chunked_read():
    """uwsgi's reader of chunked bodies, or None outside uwsgi."""
    try:
        import uwsgi
    except ImportError:
        return None
    return getattr(uwsgi, 'chunked_read', None)


def open_body(environ, declared, chunked):
    """A :class:`SizedBodyReader` over this request's body.

    :param chunked: whether the body uses chunked transfer coding.
    :raises sizeaware.exceptions.UnsupportedFraming: for a chunked body on a
        server that offers no way to read it to its end.
    """
    if not chunked:
        return SizedBodyReader(environ['wsgi.input'].read, declared,
                               delimited=True)
    if 'uwsgi.version' in environ:
        chunked_read = _uwsgi_chunked_read()
        if chunked_read is not None:
            return SizedBodyReader(lambda hint: chunked_read(), declared,
                                   delimited=False)
    if environ.get('wsgi.input_terminated'):
        return SizedBodyReader(environ['wsgi.input'].read, declared,
                               delimited=False)
    raise exceptions.UnsupportedFraming(
        'This server cannot read a chunked image upload to its end; send '
        'the image with a Content-Length.')

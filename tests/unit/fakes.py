"""A stand-in for Glance: a WSGI app that reads the body as Glance does."""

import io

import webob
import webob.exc


class FakeGlance:
    """Reads ``request.body_file`` in ``read_size`` pieces, like Glance.

    :param read_size: the size of each read, or ``'line'`` to read with
        ``readline`` or ``'iter'`` to iterate.
    :param on_error: what to do when reading raises: ``'raise'`` lets the
        exception out, ``'500'`` answers 500, ``'swallow'`` answers 204 as
        if nothing happened.
    """

    def __init__(self, read_size=65536, on_error='raise'):
        self.read_size = read_size
        self.on_error = on_error
        self.calls = 0
        self.environ = None
        self.body = None
        self.error = None

    def __call__(self, environ, start_response):
        self.calls += 1
        self.environ = dict(environ)
        request = webob.Request(environ)
        try:
            self.body = self._read(request.body_file)
        except Exception as exc:
            self.error = exc
            if self.on_error == 'raise':
                raise
            if self.on_error == '500':
                return webob.exc.HTTPInternalServerError()(
                    environ, start_response)
        return webob.exc.HTTPNoContent()(environ, start_response)

    def _read(self, stream):
        pieces = []
        if self.read_size == 'line':
            while True:
                line = stream.readline()
                if not line:
                    break
                pieces.append(line)
        elif self.read_size == 'iter':
            pieces.extend(stream)
        elif self.read_size == 'all':
            pieces.append(stream.read())
        else:
            while True:
                piece = stream.read(self.read_size)
                if not piece:
                    break
                pieces.append(piece)
        return b''.join(pieces)


class UntouchableInput(io.RawIOBase):
    """A ``wsgi.input`` that fails the test if anyone reads it."""

    def readable(self):
        return True

    def readinto(self, buffer):
        raise AssertionError('the body was read')


class ChunkSource:
    """Chunks as a server's chunked reader returns them, then the end."""

    def __init__(self, chunks, fail_with=None):
        self.chunks = list(chunks)
        self.fail_with = fail_with
        self.pulls = 0

    def __call__(self, hint=None):
        self.pulls += 1
        if self.chunks:
            return self.chunks.pop(0)
        if self.fail_with is not None:
            raise self.fail_with
        return b''

"""The one stream base: a source pulled piece by piece, counted, held to a
length, with one hook for subclasses.

Every filter of sizeaware moves image bytes from one place to another: the
size filter from the client to Glance, the resumable filter from the client
to a spool file and from the spool to Glance, the store glue from a backend
to Glance, the client from a file to the network. What they share lives
here, once:

* the source is a function, ``pull(hint) -> bytes``, returning the next
  piece of at most ``hint`` bytes for a stream or of any size for a chunk
  source (uwsgi's ``chunked_read()``), and ``b''`` at its end;
* :meth:`BodyStream.readinto` is the primitive, as in webob's
  ``LimitedLengthFile``; :meth:`BodyStream.read` adds the fast path that
  hands a whole piece on uncopied; ``readline`` and iteration come with it;
* with a known length, no byte past it is ever delivered, and the body is
  proven to end there before its last byte is handed on (a consumer told
  ``CONTENT_LENGTH`` stops reading at that length and would never see the
  excess);
* the outcomes stay distinct, as in Swift's ``HashingInput``: exact, short
  (:class:`~sizeaware.exceptions.BodyTooShort`), long
  (:class:`~sizeaware.exceptions.BodyTooLong`), the client gone
  (:class:`~sizeaware.exceptions.ClientDisconnected`) and the client silent
  (:class:`~sizeaware.exceptions.ClientTimeout`);
* :meth:`BodyStream.chunk_update` is called once per piece, in order, before
  the piece is counted as delivered: counting, digesting and spooling are
  subclasses that override it, as with Swift's ``InputProxy``.

The first error is kept in :attr:`BodyStream.error` and raised again on
every later call, so whoever owns the stream learns the outcome whatever
the consumer did with the exception.
"""

import errno
import io

from sizeaware import exceptions

#: How much to ask a source for when the caller does not say.
DEFAULT_READ_SIZE = 64 * 1024

# errno values that mean the peer went away, as opposed to went quiet.
_DISCONNECT_ERRNOS = frozenset((errno.ECONNRESET, errno.EPIPE,
                                errno.ECONNABORTED, errno.ENOTCONN,
                                errno.ESHUTDOWN))


#: What ``uwsgi.chunked_read()`` raises when a chunk does not arrive.
_UWSGI_CHUNK = 'unable to receive chunked part'


def read_error(exc, expected, received):
    """The domain error for ``exc``, raised by a source's read.

    Servers tell a client that went quiet from one that went away in
    different ways: a ``TimeoutError`` (eventlet, any socket with a
    timeout), or an ``OSError`` whose text says "timeout" (uwsgi's
    ``wsgi.input``). Anything else an ``OSError`` says is a broken
    connection, except for ``uwsgi.chunked_read()``, which raises the same
    "unable to receive chunked part" for a client gone and a client
    silent: that is taken for a timeout, so a client still listening gets
    the 408 it can act on (one that went away reads no answer; only the
    log says 408 instead of 499 for it).
    """
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError) or (
            exc.errno not in _DISCONNECT_ERRNOS
            and ('timeout' in reason.lower() or reason == _UWSGI_CHUNK)):
        return exceptions.ClientTimeout(expected, received, reason)
    return exceptions.ClientDisconnected(expected, received, reason)


class BodyStream(io.RawIOBase):
    """A read-only file over ``pull``, optionally of a known length.

    :param pull: ``pull(hint) -> bytes``, see the module docstring. May
        raise ``OSError`` when the connection breaks or times out.
    :param expected: the number of bytes the body must have, or None to
        read until the source ends.
    :param delimited: True when the source itself stops at ``expected``
        bytes (a Content-Length body), so there is nothing past the end to
        look for.
    """

    #: What :meth:`read1` takes for "the whole pending piece".
    _PIECE_MAX = 1 << 62

    def __init__(self, pull, expected=None, delimited=False):
        super().__init__()
        self._pull = pull
        self.expected = expected
        #: Bytes delivered to the consumer so far.
        self.received = 0
        #: The first error, raised again by every later call.
        self.error = None
        self._delimited = delimited or expected is None
        self._ended = False
        # The piece pulled but not yet delivered, kept in place (piece and
        # offset) so that small reads do not copy what they leave behind.
        self._chunk = b''
        self._offset = 0

    # -- the hook ---------------------------------------------------------

    def chunk_update(self, data):
        """Called with each piece, in order, before it counts as delivered.

        ``data`` is bytes-like (a ``memoryview`` on the ``readinto`` path)
        and valid only during the call. An exception raised here is the
        caller's: the piece is then neither counted nor consumed.
        """

    # -- io.RawIOBase -----------------------------------------------------

    def readable(self):
        return True

    def readinto(self, buffer):
        """Fill ``buffer`` (any writable buffer) with up to its size."""
        with memoryview(buffer) as view, view.cast('B') as target:
            count = self._available(len(target))
            if not count:
                return 0
            start = self._offset
            with memoryview(self._chunk) as chunk:
                piece = chunk[start:start + count]
                target[:count] = piece
                self._deliver(piece, count)
            return count

    def read(self, size=-1):
        """Up to ``size`` bytes (all, if negative); fewer only at the end of
        the body.

        A short read means the end of the body to most consumers (webob
        takes one for a client disconnect), so pieces are pulled until
        ``size`` is met. A piece that alone satisfies the read is returned
        as it came, uncopied.
        """
        unlimited = size is None or size < 0
        wanted = DEFAULT_READ_SIZE if unlimited else size
        pieces = []
        while available := self._available_after(wanted, pieces):
            pieces.append(self._take(available))
            if not unlimited:
                wanted -= available
        if len(pieces) == 1:
            return pieces[0]
        return b''.join(pieces)

    def readall(self):
        return self.read()

    def read1(self, size=-1):
        """Up to ``size`` bytes (the whole pending piece, if negative),
        pulling at most once: each piece of a chunk source is handed on as
        it came, uncopied, as an ``app_iter`` that relays one passes it
        (a stream source is asked for ``size`` bytes: give one). ``b''``
        only at the end of the body.
        """
        wanted = self._PIECE_MAX if size is None or size < 0 else size
        available = self._available(wanted)
        if not available:
            return b''
        return self._take(available)

    def readline(self, size=-1):
        wanted = None if size is None or size < 0 else size
        pieces = []
        while available := self._available_after(
                DEFAULT_READ_SIZE if wanted is None else wanted, pieces):
            newline = self._chunk.find(b'\n', self._offset,
                                       self._offset + available)
            take = available if newline < 0 else newline + 1 - self._offset
            pieces.append(self._take(take))
            if newline >= 0:
                break
            if wanted is not None:
                wanted -= take
        return b''.join(pieces)

    def close(self):
        """Release the pending piece and the source; later reads fail."""
        self._chunk, self._offset, self._pull = b'', 0, None
        super().close()

    # -- internals --------------------------------------------------------

    def _available(self, size):
        """How many pending bytes can be delivered next, at most ``size``;
        0 at the end of the body or when ``size`` is 0.

        Pulls only when nothing is pending, asking for no more than the
        expected length still allows; proves the end of the body before the
        last byte goes out.
        """
        if self.error is not None:
            # A re-raise must not grow the traceback with every call.
            raise self.error.with_traceback(None)
        if self.closed:
            raise ValueError('I/O operation on closed body stream')
        remaining = (None if self.expected is None
                     else self.expected - self.received)
        if remaining == 0:
            self._prove_end()
            return 0
        if size == 0:
            return 0
        if self._offset == len(self._chunk):
            hint = size if remaining is None else min(size, remaining)
            data = self._pull_or_fail(hint)
            if not data:
                if remaining is not None:
                    self._fail(self._short())
                self._ended = True
                return 0
            self._chunk, self._offset = data, 0
        pending = len(self._chunk) - self._offset
        if remaining is None:
            return min(pending, size)
        if pending >= remaining and size >= remaining:
            # This read reaches the expected length: the body must end here.
            self._prove_end(extra=pending - remaining)
        return min(pending, remaining, size)

    def _available_after(self, size, taken):
        """:meth:`_available`, for a call that has already ``taken`` pieces:
        those are delivered first, and an error waits for the next call."""
        try:
            return self._available(size)
        except Exception:
            if taken:
                return 0
            raise

    def _take(self, count):
        """Deliver ``count`` pending bytes as bytes, uncopied if whole."""
        chunk, start = self._chunk, self._offset
        if start == 0 and count == len(chunk):
            data = chunk
        else:
            data = chunk[start:start + count]
        self._deliver(data, count)
        return data

    def _deliver(self, data, count):
        self.chunk_update(data)
        self._offset += count
        self.received += count

    def _prove_end(self, extra=0):
        """Make sure the body holds no byte past the expected length.

        :param extra: pending bytes already known to lie past it.
        """
        if self._ended:
            return
        if extra or (not self._delimited and self._pull_or_fail(1)):
            self._fail(exceptions.BodyTooLong(self.expected))
        self._ended = True

    def _short(self):
        """The error for a source that ended before the expected length.

        A length-framed source ends early only when the connection does; a
        chunked one when the client sent its last chunk too soon.
        """
        if self._delimited:
            return exceptions.ClientDisconnected(
                self.expected, self.received, 'the connection closed')
        return exceptions.BodyTooShort(self.expected, self.received)

    def _pull_or_fail(self, hint):
        try:
            return self._pull(hint)
        except OSError as exc:
            self._fail(read_error(exc, self.expected, self.received))
        except Exception as exc:
            # Not ours to name (a store driver's error, a refusal from a
            # stream underneath): kept as it is, so a read that already
            # took pieces does not turn it into an end of the body.
            self._fail(exc)

    def _fail(self, error):
        self.error = error
        self._chunk, self._offset = b'', 0
        raise error

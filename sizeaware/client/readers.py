"""Reading the data an upload sends: its source (a file, or standard
input), request bodies on the one stream base, the checks of what a
server holds against the source, and the whole source's digest."""

import os
import sys
import threading

from sizeaware import digests
from sizeaware import stream
from sizeaware.client import errors

#: Bytes read from a file at a time.
PIECE = 1 << 20


def _changed(position):
    return errors.TransferError(
        'the file ends at byte %d, before its size: it changed during the '
        'upload' % position)


class FileSpan(stream.BodyStream):
    """Bytes ``[start, stop)`` of the file open as ``fd``, as a request
    body of known length: every piece goes through ``on_bytes`` (digests,
    progress) as it is handed to the connection.

    ``len()`` and ``tell()`` answer what requests asks to frame the body
    with ``Content-Length`` rather than chunked.
    """

    #: Bytes read from the file at a time; the connection takes them in
    #: smaller pieces, uncopied where it can.
    PIECE = PIECE

    def __init__(self, fd, start, stop, on_bytes=None, delimited=True):
        self._fd = fd
        self._position = start
        self._stop = stop
        self._on_bytes = on_bytes
        super().__init__(self._pull_file, expected=stop - start,
                         delimited=delimited)

    def _pull_file(self, hint):
        count = min(max(hint, self.PIECE), self._stop - self._position)
        if count <= 0:
            return b''
        data = os.pread(self._fd, count, self._position)
        if not data:
            raise _changed(self._position)
        self._position += len(data)
        return data

    def chunk_update(self, data):
        if self._on_bytes is not None:
            self._on_bytes(data)

    def __len__(self):
        return self.expected - self.received

    def tell(self):
        return 0


class PipeBody(FileSpan):
    """``size`` bytes of standard input (a binary file object) as a request
    body of known length. Its end is proven before its last byte goes out:
    a pipe that ends early or holds more raises
    :class:`~sizeaware.client.errors.TransferError` and the request is cut
    short, so that Glance keeps nothing of it."""

    def __init__(self, source, size, on_bytes):
        self._source = source
        super().__init__(None, 0, size, on_bytes, delimited=False)

    def _pull_file(self, hint):
        left = self._stop - self._position
        if left <= 0:
            if self._source.read(1):
                raise errors.TransferError(
                    'standard input holds more than --size %d bytes'
                    % self._stop)
            return b''
        data = self._source.read(min(max(hint, self.PIECE), left))
        if not data:
            raise errors.TransferError(
                'standard input ended at %d bytes; --size said %d'
                % (self._position, self._stop))
        self._position += len(data)
        return data


def read_spans(fd, pairs, consume):
    """``consume(offset, data)`` with the bytes of each ``(start, stop)`` of
    ``pairs`` in the file open as ``fd``, in order, :data:`PIECE` at a
    time."""
    for start, stop in pairs:
        position = start
        while position < stop:
            data = os.pread(fd, min(PIECE, stop - position), position)
            if not data:
                raise _changed(position)
            consume(position, data)
            position += len(data)


def digest_of(fd, start, stop, algorithm, consume=None):
    """The digest (bytes) of bytes ``[start, stop)`` of the file open as
    ``fd``; ``consume(offset, data)`` sees the bytes too."""
    digest = digests.new(algorithm)

    def update(offset, data):
        digest.update(data)
        if consume is not None:
            consume(offset, data)
    read_spans(fd, [(start, stop)], update)
    return digest.digest()


class PieceCheck:
    """The pieces a session's status document lists (``[first, last,
    hex digest]``, ``last`` inclusive, overlapping at will), compared with
    the bytes they cover as those are fed in order.

    :attr:`bad` lists each piece whose bytes differ, once the bytes up to
    its last went by; :attr:`complete` says every piece was checked.
    """

    def __init__(self, pieces, algorithm):
        digests.new(algorithm)  # ValueError for one this Python lacks
        self.algorithm = algorithm
        self._waiting = sorted(((int(first), int(last), str(value).lower())
                                for first, last, value in pieces),
                               reverse=True)
        #: Pieces begun: ``[first, last, expected, digest]``.
        self._open = []
        self.bad = []

    def spans(self):
        """The ``[first, last]`` pairs of the pieces (for
        :func:`sizeaware.client.spans.missing`)."""
        return [(first, last) for first, last, _ in self._waiting] + [
            (first, last) for first, last, _, _ in self._open]

    @property
    def complete(self):
        return not (self._waiting or self._open)

    def feed(self, offset, data):
        end = offset + len(data)
        while self._waiting and self._waiting[-1][0] < end:
            first, last, expected = self._waiting.pop()
            if first < offset:
                raise ValueError('bytes from %d were not fed' % first)
            self._open.append([first, last, expected,
                               digests.new(self.algorithm)])
        view = memoryview(data)
        still_open = []
        for piece in self._open:
            first, last, expected, digest = piece
            stop = min(last + 1, end)
            digest.update(view[max(first, offset) - offset:stop - offset])
            if stop <= last:
                still_open.append(piece)
            elif digest.hexdigest() != expected:
                self.bad.append((first, last))
        self._open = still_open


def check_file(fd, check):
    """Feed ``check`` (a :class:`PieceCheck`) the bytes its pieces cover in
    the file open as ``fd``, each byte once; its bad pieces."""
    covered = []
    for first, last in sorted(check.spans()):
        if covered and first <= covered[-1][1]:
            covered[-1][1] = max(covered[-1][1], last + 1)
        else:
            covered.append([first, last + 1])
    read_spans(fd, covered, check.feed)
    return check.bad


class FileHash:
    """The digest of a whole file, computed by a thread of its own that
    reads it in order while the transfer sends it, overlapping with it
    (hashlib and ``pread`` release the GIL).

    :meth:`hexdigest` waits for it; :meth:`stop` ends it early (before the
    file is closed).
    """

    def __init__(self, fd, size, algorithm):
        self.algorithm = digests.canonical(algorithm)
        self._digest = digests.new(algorithm)
        self._stopping = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._read, args=(fd, size),
                                        daemon=True)
        self._thread.start()

    def _read(self, fd, size):
        def update(offset, data):
            if self._stopping.is_set():
                raise _Stopped()
            self._digest.update(data)
        try:
            read_spans(fd, [(0, size)], update)
        except _Stopped:
            pass
        except Exception as exc:  # re-raised by hexdigest()
            self._error = exc

    def hexdigest(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._digest.hexdigest()

    def stop(self):
        self._stopping.set()
        self._thread.join()


class _Stopped(Exception):
    pass


def open_source(path, size=None):
    """What ``sizeaware upload`` reads: a file, or standard input for
    ``'-'``; close it when done."""
    if path == '-':
        return PipeSource(size)
    return FileSource(path, size)


class FileSource:
    """A file's data, read at any offset, hashed in a thread of its own
    once :meth:`start_hash` is called."""

    rereadable = True

    def __init__(self, path, size=None):
        self.name = path
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise errors.TransferError('cannot read %s: %s'
                                       % (path, exc.strerror)) from exc
        stat = os.fstat(self.fd)
        self.size = stat.st_size
        self.identity = {'source': os.path.abspath(path),
                         'mtime_ns': stat.st_mtime_ns}
        self.whole = None
        if size not in (None, self.size):
            self.close()
            raise errors.TransferError('--size %d, but %s holds %d bytes'
                                       % (size, path, self.size))

    def read_at(self, offset, count):
        return os.pread(self.fd, count, offset)

    def body(self, start, stop, on_bytes):
        return FileSpan(self.fd, start, stop, on_bytes)

    def digest(self, start, stop, algorithm, consume=None):
        return digest_of(self.fd, start, stop, algorithm, consume)

    def bad_pieces(self, check):
        return check_file(self.fd, check)

    def start_hash(self, algorithm):
        self.whole = FileHash(self.fd, self.size, algorithm)

    def hexdigest(self, algorithm):
        """The file's digest: the one computed as it was sent, or one more
        pass over it for another algorithm."""
        if self.whole is None or (
                self.whole.algorithm != digests.canonical(algorithm)):
            self.whole = FileHash(self.fd, self.size, algorithm)
        return self.whole.hexdigest()

    def close(self):
        if self.whole is not None:
            self.whole.stop()  # it reads the file: before closing it
        os.close(self.fd)


class PipeSource:
    """Standard input: ``size`` bytes read once, in order, and hashed as
    they are read."""

    rereadable = False
    name = 'standard input'

    def __init__(self, size, stream=None):
        if size is None:
            raise errors.TransferError('--size is needed to upload from '
                                       'standard input')
        self.size = size
        self.stream = stream if stream is not None else sys.stdin.buffer
        self.identity = {'source': '-'}
        self.whole = None
        self.algorithm = None
        self.position = 0

    def start_hash(self, algorithm):
        self.algorithm = digests.canonical(algorithm)
        self.whole = digests.new(algorithm)

    def read(self, count):
        data = self.stream.read(count)
        if self.whole is not None:
            self.whole.update(data)
        self.position += len(data)
        return data

    def read_exactly(self, count):
        data = self.read(count)
        if not data:
            raise errors.TransferError(
                'standard input ended at %d bytes; --size said %d'
                % (self.position, self.size))
        return data

    def check_end(self):
        if self.stream.read(1):
            raise errors.TransferError('standard input holds more than '
                                       '--size %d bytes' % self.size)

    def body(self, start, stop, on_bytes):
        return PipeBody(self, stop - start, on_bytes)

    def hexdigest(self, algorithm):
        """The digest of what was read; when nothing was (an earlier run
        sent it all), of standard input read now."""
        if self.whole is None:
            self.start_hash(algorithm)
            while self.position < self.size:
                self.read_exactly(min(PIECE,
                                      self.size - self.position))
            self.check_end()
        if self.algorithm != digests.canonical(algorithm):
            raise errors.TransferError(
                'Glance records the %s of the image; standard input, read '
                'once, was hashed with %s: not verified'
                % (algorithm, self.algorithm))
        return self.whole.hexdigest()

    def close(self):
        pass


class Part:
    """A part of standard input held in memory, from ``start`` on, with
    the interface of :class:`FileSource` a ranged PUT sends from."""

    def __init__(self, start, data):
        self.start = start
        self.view = memoryview(data)

    def digest(self, start, stop, algorithm):
        return digests.new(algorithm, self.view[
            start - self.start:stop - self.start]).digest()

    def body(self, start, stop, on_bytes):
        piece = self.view[start - self.start:stop - self.start]
        on_bytes(piece)
        return bytes(piece)

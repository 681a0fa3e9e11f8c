"""``sizeaware download``: an image's data into a file, verified, resumed
after any break, never spliced from an answer that is not the rest of the
same image.

The data goes to a partial file beside the destination
(``.<name>.sizeaware-part``) with a state file beside it (``...part.json``)
listing the units (the manifest's chunks, else pieces of
:data:`DEFAULT_UNIT`) already written, saved every
:data:`STATE_INTERVAL`. A later run for the same image resumes from what
the partial file holds, after a ``kill -9`` too: when the image records
chunk digests, every chunk of the partial file whose bytes match its
digest is kept and no other, whatever the state file says (a client
killed before its first save loses nothing it wrote); without them, the
units the state file lists.

Resuming follows :mod:`sizeaware.resume`, as the store drivers' restarting
reads do: each request after the first asks for ``Range: bytes=a-b`` with
``If-Match`` the first answer's strong ``ETag``, and its answer is written
only if it is a 206 of exactly that range with that ``ETag``; a 412 or
another ``ETag`` means the image changed (the partial file is removed).
Without an ``ETag`` the image's record is fetched again and compared
before a resumed answer is kept. A server that answers 200 to a ranged
request is detected and the download starts over with one whole-image
request. 408, 429, 500, 502, 503 and 504, a broken, silent or short
answer are retried from the exact byte, with a budget of failures in a
row that every answer delivering bytes makes whole again; other statuses
end the download. Chunks with digests in the image's properties are
checked as they arrive, and only a bad chunk is fetched again. The whole
file is checked against ``os_hash_value`` (``os_hash_algo``), else the MD5
``checksum``, then fsynced and renamed into place.
"""

import concurrent.futures
import contextlib
import dataclasses
import functools
import os
import pathlib
import queue
import sys
import threading
import time

from sizeaware import digests
from sizeaware import durable
from sizeaware import resume
from sizeaware.client import answers
from sizeaware.client import connection
from sizeaware.client import errors
from sizeaware.client import manifest as manifest_mod
from sizeaware.client import progress as progress_mod
from sizeaware.client import spans
from sizeaware.client import state

#: Unit of resumption and of parallel splitting without a manifest.
DEFAULT_UNIT = 8 * 2**20
#: Bytes read from a response at a time.
READ_SIZE = 1 << 20
#: How often the state file is rewritten during a download.
STATE_INTERVAL = 1.0
#: Times a chunk whose digest is wrong is fetched again.
REFETCHES = 3
#: Bytes of good units kept in memory for the whole-image hash, so that it
#: need not read them back from the file; beyond, it reads them back.
HOLD_BYTES = 32 * 2**20
#: Units larger than this are never kept in memory (a stream would hold a
#: whole unit before knowing whether it is good).
HOLD_UNIT = 16 * 2**20
#: Failures in a row a stream retries; its first and longest waits.
ATTEMPTS = 8
FIRST_WAIT = 0.5
LONGEST_WAIT = 10.0


class RangesIgnored(errors.NotSpliceable):
    """The server answered 200 to a ranged request."""


#: What :func:`sizeaware.resume.check` raises for the client.
ERRORS = resume.Errors(changed=errors.ImageChanged,
                       mismatch=errors.NotSpliceable, ignored=RangesIgnored,
                       noun='the image')


def new_backoff(sleep=time.sleep):
    """A stream's retry budget (:class:`sizeaware.resume.Backoff`)."""
    return resume.Backoff(ATTEMPTS, FIRST_WAIT, LONGEST_WAIT,
                          give_up=_give_up, sleep=sleep)


def _give_up(failures, reason):
    return errors.TransferError(
        'giving up after %d failed attempts in a row; last: %s'
        % (failures, _short(reason)))


class WholeHasher:
    """The whole image's digest, computed from the partial file by a
    thread of its own that follows the ground known good (units written,
    and verified where the image has chunk digests) as it grows.

    It never hashes a byte that may still be replaced (a bad chunk is not
    ground known good until it was fetched again) and it overlaps with the
    streams. Good units a stream still holds in memory are handed to it
    (:meth:`hold`), up to :data:`HOLD_BYTES`, and hashed from there; any
    other byte is read back from the file (the page cache).
    """

    def __init__(self, algorithm, fd):
        self._hash = digests.new(algorithm)
        self._fd = fd
        self.cursor = 0
        self._target = 0
        self._stopped = False
        self.error = None
        #: start -> (end, pieces): good bytes still in memory.
        self._held = {}
        self._held_bytes = 0
        #: Bytes hashed from memory and read back from the file.
        self.from_memory = 0
        self.read_back = 0
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def hold(self, start, pieces):
        """``pieces`` (buffers) are the good bytes from ``start`` on: hash
        them from memory if they are still wanted and the budget allows.
        Call before :meth:`advance_to` moves past them."""
        size = sum(len(piece) for piece in pieces)
        with self._wake:
            if (start < self.cursor
                    or self._held_bytes + size > HOLD_BYTES):
                return
            self._held[start] = (start + size, pieces)
            self._held_bytes += size

    def advance_to(self, limit):
        """Bytes before ``limit`` are known good: hash them."""
        with self._wake:
            if limit > self._target:
                self._target = limit
                self._wake.notify()

    def stop(self):
        """Hash up to the last limit given, then end the thread."""
        with self._wake:
            self._stopped = True
            self._wake.notify()
        self._thread.join()

    def finish(self, size):
        """The hex digest of the ``size`` bytes of the file."""
        self.advance_to(size)
        self.stop()
        if self.error is not None:
            raise self.error
        return self._hash.hexdigest()

    def _take_held(self, target):
        """``(pieces, end)`` held from the cursor on, or ``(None, stop)``:
        read the file back up to ``stop``, where the next held bytes
        start (or ``target``)."""
        with self._wake:
            for start in [s for s in self._held if s < self.cursor]:
                end, _pieces = self._held.pop(start)  # read back already
                self._held_bytes -= end - start
            held = self._held.get(self.cursor)
            if held is not None and held[0] <= target:
                del self._held[self.cursor]
                self._held_bytes -= held[0] - self.cursor
                return held[1], held[0]
            return None, min([target] + [s for s in self._held
                                         if s > self.cursor])

    def _follow(self):
        while True:
            with self._wake:
                while self.cursor >= self._target and not self._stopped:
                    self._wake.wait()
                if self.cursor >= self._target:
                    return
                target = self._target
            while self.cursor < target:
                pieces, stop = self._take_held(target)
                if pieces is not None:
                    for piece in pieces:
                        self._hash.update(piece)
                    self.from_memory += stop - self.cursor
                    self.cursor = stop
                    continue
                data = os.pread(self._fd, min(4 << 20, stop - self.cursor),
                                self.cursor)
                if not data:
                    self.error = errors.IntegrityError(
                        'the partial file ends at byte %d' % self.cursor)
                    return
                self._hash.update(data)
                self.cursor += len(data)
                self.read_back += len(data)


class _HashPipe:
    """Runs ``work(position, piece)`` for each piece, in order, on a
    thread of its own: hashing (which releases the GIL) then overlaps
    with receiving and writing the next pieces, on another core."""

    _END = None

    def __init__(self, work, depth=16):
        self._work = work
        self._queue = queue.Queue(maxsize=depth)
        self.error = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def put(self, position, piece):
        if self.error is not None:
            raise self.error
        self._queue.put((position, piece))

    def close(self):
        """Wait until every piece put was hashed (idempotent)."""
        if self._thread.is_alive():
            self._queue.put(self._END)
            self._thread.join()
        if self.error is not None:
            raise self.error

    def _run(self):
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if self.error is None:
                try:
                    self._work(*item)
                except Exception as exc:  # raised again to the receiver
                    self.error = exc


@contextlib.contextmanager
def first_error_wins(close):
    """Run the block, then ``close()``. An exception of the block is the
    one raised, whatever ``close()`` does (its own failure is added to it
    as a note); ``close()``'s own when the block raised none."""
    try:
        yield
    except BaseException as error:
        try:
            close()
        except Exception as also:
            if also is not error:
                error.add_note('closing also failed: %s' % _short(also))
        raise
    close()


def part_paths(destination):
    destination = pathlib.Path(destination)
    part = destination.with_name('.%s.sizeaware-part' % destination.name)
    return part, part.with_name(part.name + '.json')


class Download:
    """One download. :meth:`run` returns a dict of figures."""

    def __init__(self, conn, image_id, destination, *, parallel=1,
                 verify_chunks=True, show_progress=None, log=None,
                 backoff=new_backoff, unit=DEFAULT_UNIT):
        self.conn = conn
        self.image_id = image_id
        self.destination = pathlib.Path(destination)
        self.parallel = max(1, parallel)
        self.verify_chunks = verify_chunks
        self.show_progress = show_progress
        self.log = log or (lambda text: print(text, file=sys.stderr))
        self.new_backoff = backoff
        self.default_unit = unit
        self.path = '/v2/images/%s/file' % image_id
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        self.fetched = 0
        self.refetched = 0
        self.bad_chunks = set()
        #: Every chunk found bad at least once.
        self.chunks_found_bad = set()
        self.requests = 0
        #: Units 0 to _prefix - 1 are all done.
        self._prefix = 0

    # -- the whole download -----------------------------------------------

    def run(self):
        started = time.monotonic()
        record = self.conn.get_image(self.image_id)
        if record.get('status') != 'active':
            raise errors.Refused(409, 'image %s is %s, not active'
                                 % (self.image_id, record.get('status')))
        self.record = record
        self.size = size = int(record['size'])
        self.manifest = None
        if self.verify_chunks:
            try:
                self.manifest = manifest_mod.Manifest.from_properties(
                    record, size)
            except ValueError as exc:
                self.log('ignoring the chunk digests: %s' % exc)
        self.unit = (self.manifest.chunk_size if self.manifest
                     else self.default_unit)
        self.count = manifest_mod.chunk_count(size, self.unit)
        algorithm = record.get('os_hash_algo')
        expected = record.get('os_hash_value')
        if not (algorithm and expected):
            algorithm, expected = 'md5', record.get('checksum')
        self.part, self.state_path = part_paths(self.destination)
        self.identity = {
            'image_id': self.image_id, 'endpoint': self.conn.endpoint,
            'size': size, 'os_hash_value': record.get('os_hash_value'),
            'checksum': record.get('checksum'),
            'updated_at': record.get('updated_at'), 'unit': self.unit}
        previous = state.load(self.state_path)
        if previous and previous.get('identity') != self.identity:
            previous = None
        self.etag = resume.strong(previous and previous.get('etag'))
        try:
            kept = self.part.stat().st_size
        except FileNotFoundError:
            kept = None
        self.destination.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.part, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.ftruncate(self.fd, size)
            self.done = self._held(kept, previous)
            self.resumed_from = sum(
                min(self.unit, size - i * self.unit) for i in self.done)
            self.algorithm = algorithm
            self.hasher = WholeHasher(algorithm, self.fd)
            self.progress = progress_mod.Progress(
                size, self.resumed_from, 'download', self.show_progress)
            saver = threading.Thread(target=self._keep_saving, daemon=True)
            self._stop_saving = threading.Event()
            saver.start()
            try:
                self._fetch_all()
            finally:
                self._stop_saving.set()
                saver.join()
                self.progress.close()
            self._save()
            digest = self.hasher.finish(size)
            if expected and digest != expected:
                self._discard()
                raise errors.IntegrityError(
                    'the downloaded image differs from its recorded %s '
                    '(got %s); the partial file was removed'
                    % (algorithm, digest))
            if not expected:
                self.log('image %s records no hash: not verified'
                         % self.image_id)
            os.fsync(self.fd)
        finally:
            hasher = getattr(self, 'hasher', None)
            if hasher is not None:
                hasher.stop()  # it reads the file: before closing it
            os.close(self.fd)
        os.replace(self.part, self.destination)
        durable.fsync_dir(self.destination.parent)
        state.remove(self.state_path)
        return {'size': size, 'fetched': self.fetched,
                'refetched': self.refetched,
                'bad_chunks': len(self.chunks_found_bad),
                'resumed_from': self.resumed_from, 'requests': self.requests,
                'verified': algorithm if expected else None,
                'seconds': time.monotonic() - started}

    def _held(self, kept, previous):
        """The units of the partial file to keep: those whose bytes match
        the manifest's digests, else those the state file lists (the
        partial file had ``kept`` bytes before this run, None if there
        was none)."""
        if kept is None:
            return set()
        if self.manifest is not None:
            started = time.monotonic()
            done = manifest_mod.matching_chunks(self.manifest, self.fd)
            if done:
                self.log('resuming: %d of %d chunks of %s match their '
                         'digests (checked in %.2f s)'
                         % (len(done), self.count, self.part,
                            time.monotonic() - started))
            return done
        if previous is None or kept != self.size:
            return set()
        done = {int(i) for i in previous.get('done', [])}
        if done:
            self.log('resuming: %d of %d units are in %s, as its state '
                     'file lists' % (len(done), self.count, self.part))
        return done

    def _fetch_all(self):
        todo = [i for i in range(self.count) if i not in self.done]
        work = spans.runs(todo, self.unit, self.size)
        if self.parallel > 1 and spans.total(work) > self.unit:
            if self._accepts_ranges():
                work = spans.split(work, self.parallel, self.unit)
        try:
            self._run_spans(work)
        except RangesIgnored as exc:
            self.log('%s; starting again with one whole-image request'
                     % exc)
            with self._lock:
                self.done.clear()
                self._prefix = 0
                old, self.hasher = self.hasher, WholeHasher(self.algorithm,
                                                            self.fd)
            old.stop()
            self._save()
            self._fetch_span(0, self.size, ranges=False)
        for _attempt in range(REFETCHES):
            bad = sorted(i for i in range(self.count) if i not in self.done)
            if not bad:
                return
            self.log('fetching again %d chunk(s) whose digest was wrong: %s'
                     % (len(bad), ', '.join(map(str, bad))))
            for index in bad:
                start, stop = self.manifest.bounds(index)
                before = self.fetched
                self._fetch_span(start, stop)
                self.refetched += self.fetched - before
        bad = sorted(i for i in range(self.count) if i not in self.done)
        if bad:
            self._discard()
            raise errors.IntegrityError(
                'chunk(s) %s stay corrupt after %d fetches; the partial file '
                'was removed' % (', '.join(map(str, bad)), REFETCHES + 1))

    def _run_spans(self, work):
        if len(work) == 1 or self.parallel == 1:
            for span in work:
                self._fetch_span(*span)
            return
        with concurrent.futures.ThreadPoolExecutor(self.parallel) as pool:
            futures = [pool.submit(self._fetch_span, *span) for span in work]
            for future in futures:
                future.result()

    def _accepts_ranges(self):
        """Does the server answer a range with a 206? One byte to know."""
        response = self._get({'Range': 'bytes=0-0'})
        with contextlib.closing(response):
            answers.raise_for_status(response, 'GET image data')
            if response.status_code == 206:
                self._learn_etag(response.headers.get('ETag'))
                return True
        self.log('the server answers a range with %d, not spliced: it does '
                 'not answer ranges, one stream' % response.status_code)
        return False

    def _get(self, headers):
        with self._lock:
            self.requests += 1
        return self.conn.request('GET', self.path, headers=headers,
                                 stream=True)

    def _learn_etag(self, etag):
        """Pin the download to the first strong ``ETag`` seen."""
        with self._lock:
            if self.etag is None:
                self.etag = resume.strong(etag)
            return self.etag

    # -- one span ---------------------------------------------------------

    def _fetch_span(self, start, stop, ranges=True):
        """Write bytes ``[start, stop)``, resuming from the exact offset
        after every break."""
        backoff = self.new_backoff()
        position = start
        first = True
        while position < stop:
            if not ranges:
                # Only a whole-image request: each try starts over.
                position = start
            whole = position == 0 and stop == self.size
            want = resume.Want(position, stop, self.etag, whole=not ranges
                               or (whole and first and not self.etag))
            check_record = not first and not self.etag
            first = False
            cursor = [position]  # moved by _receive as bytes are written
            try:
                if check_record:
                    answers.same_record(self.record,
                                        self.conn.get_image(self.image_id))
                response = self._get(want.headers())
                with contextlib.closing(response):
                    self._judge(response, want)
                    pipe = self._hash_pipe(position)
                    with first_error_wins(pipe.close):
                        self._receive(response, cursor, stop, pipe)
                if cursor[0] < stop:
                    raise errors.Transient('the answer ended at byte %d of '
                                           '%d' % (cursor[0], stop))
            except (errors.Transient,) + connection.CONNECTION_ERRORS as exc:
                if cursor[0] > position:
                    backoff.progressed()
                backoff.failed(exc)
                self.log('the download broke at byte %d (%s); resuming'
                         % (cursor[0], _short(exc)))
            position = cursor[0]

    def _judge(self, response, want):
        """Raise unless the answer to ``want`` may be written: a retryable
        status is :class:`~errors.Transient`, any other refusal
        :class:`~errors.Refused`; then :func:`sizeaware.resume.check`,
        against the ``ETag`` the download is pinned to."""
        status = response.status_code
        if status not in (200, 206, 412):
            try:
                answers.raise_for_status(response, 'GET image data')
            except errors.Transient as exc:
                if not resume.retryable(status):
                    raise errors.Refused(status, str(exc)) from None
                raise
        headers = response.headers
        etag = headers.get('ETag')
        pinned = dataclasses.replace(want, etag=want.etag or
                                     self._learn_etag(etag))
        length = headers.get('Content-Length')
        answer = resume.Part(status, etag=etag,
                             content_range=headers.get('Content-Range'),
                             content_length=int(length) if length and
                             length.isdigit() else None)
        try:
            resume.check(pinned, answer, self.size, ERRORS,
                         'image %s' % self.image_id)
        except errors.ImageChanged:
            self._discard()
            raise

    def _hash_pipe(self, position):
        """The hashing thread of an answer written from ``position``."""
        verifier = None
        if self.manifest:
            verifier = manifest_mod.ChunkHasher(
                self.manifest, position, self._chunk_checked,
                read_at=self._read_at)
        return _HashPipe(functools.partial(
            self._digest, verifier=verifier,
            held=[] if self.unit <= HOLD_UNIT else None))

    def _receive(self, response, cursor, stop, pipe):
        """Write the answer's bytes from ``cursor[0]`` on, moving it past
        each piece written (so that a break leaves it at the exact offset
        to resume from)."""
        position = cursor[0]
        for data in response.raw.stream(READ_SIZE, decode_content=False):
            if position + len(data) > stop:
                raise errors.Transient('the answer is longer than asked')
            for piece in self._pieces(data, position):
                os.pwrite(self.fd, piece, position)
                pipe.put(position, piece)
                position += len(piece)
                cursor[0] = position
                with self._lock:
                    self.fetched += len(piece)
                self.progress.update(len(piece))

    def _digest(self, position, piece, verifier, held):
        """The chunk digests of a piece written at ``position`` (on the
        span's hashing thread); at the end of a unit, its verdict, and
        the unit's pieces (``held``, the span's list, or None) handed to
        the whole-image hash if the unit is good and whole in them."""
        end = position + len(piece)
        if held is not None:
            held.append(piece)
        if verifier is not None:
            verifier.feed(piece)  # marks the chunk done, or bad
        if end % self.unit and end != self.size:
            return
        index = (end - 1) // self.unit
        if verifier is None:
            with self._lock:
                self.done.add(index)
        if held:
            start = index * self.unit
            with self._lock:
                good = index in self.done
            if good and sum(len(p) for p in held) == end - start:
                self.hasher.hold(start, list(held))
            held.clear()
        self._advance()

    def _pieces(self, data, position):
        """``data`` cut where units end, so each unit's verdict comes
        before the next unit's first byte is hashed."""
        view = memoryview(data)
        while len(view):
            take = min(len(view), self.unit - position % self.unit)
            yield view[:take]
            view = view[take:]
            position += take

    def _advance(self):
        """Let the whole-image hash follow the ground known good."""
        with self._lock:
            while self._prefix in self.done:
                self._prefix += 1
            limit = min(self._prefix * self.unit, self.size)
        self.hasher.advance_to(limit)

    def _chunk_checked(self, index, digest):
        start, stop = self.manifest.bounds(index)
        if digest == self.manifest.digests.get(index):
            with self._lock:
                self.done.add(index)
                self.bad_chunks.discard(index)
            return
        self.log('chunk %d (bytes %d-%d) does not match its digest'
                 % (index, start, stop - 1))
        with self._lock:
            self.bad_chunks.add(index)
            self.chunks_found_bad.add(index)
            self.done.discard(index)

    def _read_at(self, offset, count):
        return os.pread(self.fd, count, offset)

    # -- state ------------------------------------------------------------

    def _keep_saving(self):
        """Save the state every :data:`STATE_INTERVAL`, beside the
        transfer (flushing the data to disk takes time the streams need
        not wait for)."""
        while not self._stop_saving.wait(STATE_INTERVAL):
            self._save()

    def _save(self):
        with self._save_lock:
            with self._lock:
                done = sorted(self.done)
                etag = self.etag
            # The data first (every unit listed was written before this
            # flush began), then the record saying it is there.
            os.fdatasync(self.fd)
            state.save(self.state_path, {'identity': self.identity,
                                         'etag': etag, 'done': done})

    def _discard(self):
        state.remove(self.state_path)
        with contextlib.suppress(FileNotFoundError):
            self.part.unlink()


def _short(exc):
    return (' '.join(str(exc).split()) or type(exc).__name__)[:200]

"""``sizeaware upload``: an image's data to Glance, with its size declared,
resumed after any break where the server keeps partial uploads.

Where Glance runs sizeaware's ``resumable`` filter (found by the tus
``OPTIONS`` it answers), the image goes as ranged ``PUT`` requests
(``Content-Range: bytes a-b/N``), ``parallel`` of them at once for a
file; after a break the session's status document says which bytes the
server holds and only the rest is sent again. Elsewhere it is one plain
``PUT`` with ``Content-Length``, started again from the first byte after a
break (Glance keeps nothing of a broken upload). Either way the request
carries ``X-OpenStack-Image-Size`` and never a chunked body for a file.

Chunk digests (:mod:`sizeaware.client.manifest`) are computed as the bytes
are sent, kept in the state file as they complete, and recorded in the
image's properties once the image is uploaded.
"""

import base64
import concurrent.futures
import contextlib
import os
import sys
import threading
import time

from sizeaware.client import answers
from sizeaware.client import connection
from sizeaware.client import errors
from sizeaware.client import manifest as manifest_mod
from sizeaware.client import progress as progress_mod
from sizeaware.client import readers
from sizeaware.client import retry
from sizeaware.client import spans
from sizeaware.client import state

#: Bytes of a pipe held in memory at a time, to be sent again after a
#: break.
PIPE_PART = 8 * 2**20
#: How often the state file is rewritten while digests complete.
STATE_INTERVAL = 1.0
#: What is worth another try.
TRANSIENT = (errors.Transient,) + connection.CONNECTION_ERRORS


class Upload:
    """One upload. :meth:`run` returns a dict of figures for the summary.

    :param source: a file's path, or ``'-'`` for standard input.
    :param size: required for a pipe; for a file, checked against it.
    :param target: ``'file'`` (upload) or ``'stage'`` (glance-direct).
    :param chunk_size: the digests' chunk size, rounded up as the
        manifest needs; ranges sent in parallel are cut on its multiples.
    :param digests: the digest algorithm, or None for no manifest.
    """

    def __init__(self, conn, image_id, source, *, size=None, target='file',
                 parallel=1, chunk_size=None, state_dir=None,
                 digests=manifest_mod.DEFAULT_ALGORITHM, show_progress=None,
                 resumable=None, log=None, backoff=retry.Backoff):
        self.conn = conn
        self.image_id = image_id
        self.source = source
        self.declared_size = size
        self.target = target
        self.parallel = max(1, parallel)
        self.wanted_chunk = chunk_size
        self.state_dir = state_dir or state.default_dir()
        self.algorithm = digests
        self.show_progress = show_progress
        self.force_resumable = resumable
        self.log = log or (lambda text: print(text, file=sys.stderr))
        self.new_backoff = backoff
        self.path = '/v2/images/%s/%s' % (image_id, target)
        self._lock = threading.Lock()
        self._saved_at = 0.0
        self.sent = 0
        self.resumed_from = 0

    # -- the whole upload -------------------------------------------------

    def run(self):
        started = time.monotonic()
        image = self.conn.get_image(self.image_id)
        pipe = self.source == '-'
        if pipe:
            if self.declared_size is None:
                raise errors.TransferError('--size is needed to upload '
                                           'from standard input')
            self.size = self.declared_size
            self.fd = sys.stdin.buffer.fileno()
            identity = {'source': '-'}
        else:
            self.fd = os.open(self.source, os.O_RDONLY)
            stat = os.fstat(self.fd)
            self.size = stat.st_size
            if self.declared_size not in (None, self.size):
                raise errors.TransferError(
                    '--size %d, but %s holds %d bytes'
                    % (self.declared_size, self.source, self.size))
            identity = {'source': os.path.abspath(self.source),
                        'mtime_ns': stat.st_mtime_ns}
        try:
            return self._run(image, pipe, identity, started)
        finally:
            if not pipe:
                os.close(self.fd)

    def _run(self, image, pipe, identity, started):
        self.manifest = None
        if self.algorithm:
            self.manifest = manifest_mod.Manifest(
                self.size,
                manifest_mod.chunk_size_for(self.size, self.wanted_chunk,
                                            self.algorithm),
                self.algorithm)
        chunk = (self.manifest.chunk_size if self.manifest else
                 manifest_mod.chunk_size_for(self.size, self.wanted_chunk))
        self.state_path = state.upload_path(
            self.state_dir, self.conn.endpoint, self.image_id, self.target)
        self.identity = dict(identity, image_id=self.image_id,
                             target=self.target, size=self.size,
                             chunk_size=chunk, algorithm=self.algorithm)
        previous = state.load(self.state_path)
        if previous and previous.get('identity') == self.identity:
            if self.manifest:
                self.manifest.digests.update(
                    {int(i): base64.b64decode(d)
                     for i, d in previous.get('digests', {}).items()})
        else:
            previous = None
        done_status = 'uploading' if self.target == 'stage' else 'active'
        if image['status'] == 'saving' and previous is not None:
            # An earlier run sent every byte and was stopped while its
            # last request had Glance store the image.
            self.log('image %s is being stored from an earlier run\'s '
                     'upload; waiting for it' % self.image_id)
            image = self._while_saving()
        if image['status'] == done_status and previous is not None:
            # Uploaded by an earlier run that was stopped before it
            # recorded the digests.
            self.log('image %s is already %s; recording its chunk digests'
                     % (self.image_id, done_status))
        elif image['status'] != 'queued':
            raise errors.Refused(409, 'image %s is %s, not queued'
                                 % (self.image_id, image['status']))
        else:
            self._save(force=True)
            resumable = (self.force_resumable
                         if self.force_resumable is not None
                         else self._discover())
            self.progress = progress_mod.Progress(
                self.size, description='upload', enabled=self.show_progress)
            try:
                if resumable and pipe:
                    self._ranged_pipe()
                elif resumable:
                    self._ranged_file(chunk)
                else:
                    self._plain(pipe)
            finally:
                self.progress.close()
            self._wait_until(done_status)
        if self.manifest:
            self._fill_digests(pipe)
            self.conn.update_properties(self.image_id,
                                        self.manifest.to_properties())
        state.remove(self.state_path)
        elapsed = time.monotonic() - started
        return {'size': self.size, 'sent': self.sent, 'seconds': elapsed,
                'resumed_from': self.resumed_from}

    def _discover(self):
        """Does this Glance keep partial uploads? Its tus ``OPTIONS``
        answer says so (sizeaware's ``resumable`` filter answers them)."""
        try:
            response = self.conn.request('OPTIONS', self.path, headers={
                'Tus-Resumable': '1.0.0'})
        except connection.CONNECTION_ERRORS as exc:
            raise errors.TransferError('cannot reach Glance: %s' % exc)
        with contextlib.closing(response):
            return (response.status_code < 300
                    and 'Tus-Version' in response.headers)

    # -- ranged PUT -------------------------------------------------------

    def _status(self):
        """The session's status document, or None when there is none."""
        response = self.conn.request('GET', self.path + '/session')
        with contextlib.closing(response):
            if response.status_code == 404:
                return None
            answers.raise_for_status(response, 'GET the upload session')
            return response.json()

    def _missing(self):
        status = self._status()
        held = status['ranges_held'] if status else []
        if status and status.get('phase') == 'failed':
            raise errors.TransferError('the upload session failed: %s'
                                       % status.get('error'))
        return spans.missing(held, self.size), status

    def _ranged_file(self, chunk):
        todo, status = self._missing()
        self.resumed_from = self.size - spans.total(todo)
        if self.resumed_from:
            self.log('resuming: the server holds %d of %d bytes'
                     % (self.resumed_from, self.size))
        self.progress.update(self.resumed_from)
        work = spans.split(todo, self.parallel, chunk)
        if not work:
            return
        with concurrent.futures.ThreadPoolExecutor(self.parallel) as pool:
            for future in [pool.submit(self._send_file_span, *span)
                           for span in work]:
                future.result()

    def _send_file_span(self, start, stop):
        def body(position, on_bytes):
            hasher = None
            if self.manifest:
                hasher = manifest_mod.ChunkHasher(
                    self.manifest, position, self._chunk_done,
                    read_at=self._read_at)

            def counted(data):
                if hasher is not None:
                    hasher.feed(data)
                on_bytes(data)
            return readers.FileSpan(self.fd, position, stop, counted)
        self._send_span(start, stop, body)

    def _ranged_pipe(self):
        """A pipe, in parts held in memory, one ranged PUT each; parts the
        server already holds (an earlier run) are read and not sent."""
        todo, status = self._missing()
        held_before = self.size - spans.total(todo)
        self.resumed_from = held_before
        hasher = (manifest_mod.ChunkHasher(self.manifest, 0, self._chunk_done)
                  if self.manifest else None)
        position = 0
        source = sys.stdin.buffer
        while position < self.size:
            data = source.read(min(PIPE_PART, self.size - position))
            if not data:
                raise errors.TransferError(
                    'standard input ended at %d bytes; --size said %d'
                    % (position, self.size))
            if hasher is not None:
                hasher.feed(data)
            start, stop = position, position + len(data)
            position = stop
            if not _overlaps(todo, start, stop):
                self.progress.update(len(data))
                continue
            view = memoryview(data)

            def body(offset, on_bytes, view=view, start=start):
                piece = view[offset - start:]
                on_bytes(piece)
                return bytes(piece)
            self._send_span(start, stop, body)
        if source.read(1):
            raise errors.TransferError('standard input holds more than '
                                       '--size %d bytes' % self.size)

    def _send_span(self, start, stop, body):
        """PUT bytes ``[start, stop)``, resuming after breaks from what the
        server holds. ``body(position, on_bytes)`` makes the body of the
        request that sends ``[position, stop)``."""
        backoff = self.new_backoff()
        position = start
        while position < stop:
            attempt = [0]

            def on_bytes(data, attempt=attempt):
                attempt[0] += len(data)
                self.progress.update(len(data))
            headers = {
                'Content-Range': 'bytes %d-%d/%d' % (position, stop - 1,
                                                     self.size),
                'Content-Length': str(stop - position)}
            try:
                response = self.conn.put_data(
                    self.image_id, body(position, on_bytes),
                    target=self.target, size=self.size, headers=headers)
                with contextlib.closing(response):
                    answers.raise_for_status(
                        response, 'PUT bytes %d-%d' % (position, stop - 1))
                self._count(attempt[0])
                return
            except errors.Refused as exc:
                if exc.status != 409:
                    raise
                reason = exc  # another writer still winding up, or done
            except TRANSIENT as exc:
                reason = exc
            self._count(attempt[0])
            self.progress.update(-attempt[0])
            backoff.failed(reason)
            todo, status = retry.call(backoff, self._missing, TRANSIENT)
            if status is None:
                # No session: finished, or gone (expired, cancelled).
                image = retry.call(
                    backoff, lambda: self.conn.get_image(self.image_id),
                    TRANSIENT)
                if image['status'] != 'queued':
                    return
            left = [(a, b) for a, b in (
                (max(a, position), min(b, stop)) for a, b in todo) if b > a]
            new_position = left[0][0] if left else stop
            self.progress.update(new_position - position)
            if new_position > position:
                backoff.progressed()
            position = new_position

    # -- plain PUT --------------------------------------------------------

    def _plain(self, pipe):
        backoff = self.new_backoff()
        headers = {'Content-Length': str(self.size)}
        while True:
            attempt = [0]
            hasher = (manifest_mod.ChunkHasher(self.manifest, 0,
                                               self._chunk_done)
                      if self.manifest else None)

            def on_bytes(data, hasher=hasher, attempt=attempt):
                attempt[0] += len(data)
                if hasher is not None:
                    hasher.feed(data)
                self.progress.update(len(data))
            if pipe:
                source = sys.stdin.buffer
                body = _PipeBody(source, self.size, on_bytes)
            else:
                body = readers.FileSpan(self.fd, 0, self.size, on_bytes)
            try:
                response = self.conn.put_data(
                    self.image_id, body, target=self.target, size=self.size,
                    headers=headers)
                with contextlib.closing(response):
                    answers.raise_for_status(response, 'PUT the image')
                self._count(attempt[0])
                return
            except TRANSIENT as exc:
                self._count(attempt[0])
                self.progress.update(-attempt[0])
                if pipe:
                    raise errors.TransferError(
                        'the upload broke (%s) and standard input cannot '
                        'be read again; this Glance keeps no partial '
                        'uploads' % exc) from exc
                backoff.failed(exc)
            image = retry.call(backoff, self._settle, TRANSIENT)
            if image['status'] != 'queued':
                return
            self.log('the upload broke; Glance keeps nothing of it: '
                     'starting again')

    def _settle(self, timeout=60):
        """The image once Glance is done with a broken upload."""
        deadline = time.monotonic() + timeout
        while True:
            image = self.conn.get_image(self.image_id)
            if image['status'] != 'saving' or time.monotonic() > deadline:
                return image
            time.sleep(0.5)

    # -- completion -------------------------------------------------------

    def _polled(self, timeout=600):
        """The image's record, every 0.25 s for as long as the caller
        takes them; connection failures are retried with backoff, and
        :class:`~sizeaware.client.errors.TransferError` ends it after
        ``timeout``."""
        deadline = time.monotonic() + timeout
        backoff = self.new_backoff(attempts=20)
        while True:
            try:
                image = self.conn.get_image(self.image_id)
            except TRANSIENT as exc:
                backoff.failed(exc)
                continue
            yield image
            if time.monotonic() > deadline:
                raise errors.TransferError('image %s stayed %s'
                                           % (self.image_id, image['status']))
            time.sleep(0.25)

    def _while_saving(self):
        """The image's record once Glance no longer says ``saving``."""
        for image in self._polled():
            if image['status'] != 'saving':
                return image

    def _wait_until(self, done_status):
        """Wait for Glance to have the whole image: the request that
        completed it may have been cut while Glance stored it."""
        for image in self._polled():
            if image['status'] == done_status:
                return image
            if image['status'] not in ('queued', 'saving', 'importing'):
                raise errors.TransferError('image %s is %s after the upload'
                                           % (self.image_id, image['status']))
            if image['status'] == 'queued':
                status = self._status()
                if status is None or status.get('phase') in (
                        'failed', 'cancelled'):
                    raise errors.TransferError(
                        'the image is still queued after the upload%s'
                        % (': %s' % status['error'] if status and
                           status.get('error') else ''))
                if spans.missing(status['ranges_held'], self.size):
                    raise errors.TransferError(
                        'the server is missing bytes after the upload')

    # -- digests and state ------------------------------------------------

    def _chunk_done(self, index, digest):
        self.manifest.digests[index] = digest
        self._save()

    def _read_at(self, offset, count):
        return os.pread(self.fd, count, offset)

    def _fill_digests(self, pipe):
        """Digests of chunks an earlier run had the server hold but did not
        keep in its state, read from the file."""
        missing = [i for i in range(self.manifest.count)
                   if i not in self.manifest.digests]
        if not missing:
            return
        if pipe:
            raise errors.TransferError(
                'digests of %d chunks are missing and standard input cannot '
                'be read again' % len(missing))
        for index in missing:
            start, stop = self.manifest.bounds(index)
            hasher = self.manifest.new_hash()
            position = start
            while position < stop:
                data = os.pread(self.fd, min(1 << 20, stop - position),
                                position)
                hasher.update(data)
                position += len(data)
            self.manifest.digests[index] = self.manifest.truncate(
                hasher.digest())

    def _save(self, force=False):
        now = time.monotonic()
        with self._lock:
            if not force and now - self._saved_at < STATE_INTERVAL:
                return
            self._saved_at = now
            digests = {}
            if self.manifest:
                digests = {str(i): base64.b64encode(d).decode()
                           for i, d in list(self.manifest.digests.items())}
            state.save(self.state_path, {'identity': self.identity,
                                         'digests': digests})

    def _count(self, count):
        with self._lock:
            self.sent += count


def _overlaps(todo, start, stop):
    return any(a < stop and b > start for a, b in todo)


class _PipeBody(readers.FileSpan):
    """Standard input as a request body of known length."""

    def __init__(self, source, size, on_bytes):
        self._source = source
        super().__init__(None, 0, size, on_bytes)

    def _pull_file(self, hint):
        count = min(max(hint, self.PIECE), self._stop - self._position)
        if count <= 0:
            return b''
        data = self._source.read(count)
        self._position += len(data)
        return data

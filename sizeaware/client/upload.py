"""``sizeaware upload``: an image's data to Glance, with its size declared,
resumed after any break where the server keeps partial uploads, and
verified: the command succeeds only when the image holds the file.

Where Glance runs sizeaware's ``resumable`` filter (found by the tus
``OPTIONS`` it answers), the image goes as ranged ``PUT`` requests
(``Content-Range: bytes a-b/N``), ``parallel`` streams at once for a
file; elsewhere it is one plain ``PUT`` with ``Content-Length``, started
again from the first byte after a break (Glance keeps nothing of a broken
upload). Either way the request carries ``X-OpenStack-Image-Size`` and
never a chunked body for a file.

Each ranged ``PUT`` carries ``Content-Digest: crc32c=...`` (RFC 9530), and
the server keeps none of its bytes unless they match: a byte damaged on
the way is sent again, never stored. A request with a digest that is cut
loses all its bytes, so requests are :data:`REQUEST_BYTES` (8 MiB) at
most: a stream's share goes as a series of them, and a break costs at
most one. Measured against Glance 33 behind the filter on one 2-core host
(localhost, 256 MiB, five rounds; the upload is CPU-bound there, and the
spread between rounds is about a second): in 4 streams, medians of 2.6,
2.8, 2.7 and 2.9 s with 8, 16, 32 and 64 MiB requests (64 MiB is one
request per stream), 3.7 s with 1 MiB requests; in one stream, 3.1 s
with 8 MiB requests and 2.7 s with one request for the whole file. A
file's range is read twice for this, once for its digest and once to
send it, the second time from the page cache.

After a break, and when the same command runs again after the client was
killed, the session's status document says which bytes the server holds,
with a CRC-32C of each piece it received (``pieces``). Before sending
anything, every piece is compared with the file as it is now (its bytes
read again: 256 MiB of pieces took 0.05 s from the page cache); only what
is missing is sent. When the server holds bytes
that differ from the file (the file was rewritten since), a session for
another size, or bytes it gives no digests of that an earlier run of this
command did not send (a server without ``pieces``), the session is
cancelled (``DELETE .../session``) and the upload starts over. Standard
input is checked as it is read, and the request that completes the upload
is held back until every piece was checked (it is the last part read).

Once Glance has the image, the command compares Glance's ``os_hash_value``
(by its ``os_hash_algo``), or its MD5 ``checksum`` where Glance records no
other, with the file's hash: a thread of its own reads the whole file in
order while the upload sends it, so bytes a resumed upload does not send
again are hashed too; standard input is hashed as it is read. SHA-512
runs at about 770 MiB/s here (0.33 s of CPU for 256 MiB): on a real link
the thread is done long before the upload; on the 2-core host above,
where the upload is CPU-bound, the thread and a pass over the file at the
end took the same wall time within the spread (3.2 against 3.5 s in 4
streams, 3.3 against 3.0 s in one). A Glance that hashes with another
algorithm costs that pass at the end. Staged data (``--stage``) has no
hash in Glance until it is imported: where the server checks
``Content-Digest``, every byte was compared with the source on its way
(each request's digest, the pieces held from an earlier run), and that
is what the command reports.

Chunk digests (:mod:`sizeaware.client.manifest`) are computed as the file
is read, kept in the state file as they complete, and recorded in the
image's properties once the image is verified. When Glance refuses to
record them (403, property protection; 413, property quota) the image is
still there and verified: the command says so and succeeds, and forgets
the upload, so a later run does not try again (it finds the image active,
no longer queued).
"""

import base64
import concurrent.futures
import contextlib
import sys
import threading
import time

from sizeaware import digests
from sizeaware.client import answers
from sizeaware.client import connection
from sizeaware.client import errors
from sizeaware.client import manifest as manifest_mod
from sizeaware.client import progress as progress_mod
from sizeaware.client import readers
from sizeaware.client import retry
from sizeaware.client import spans
from sizeaware.client import state

#: Bytes of one ranged PUT at most (and of a pipe held in memory at a
#: time, to be sent again after a break); see the module docstring.
REQUEST_BYTES = 8 * 2**20
#: The digest each ranged PUT carries (``Content-Digest``).
REQUEST_DIGEST = 'crc32c'
#: Glance's default ``hashing_algorithm``: what the file is hashed with as
#: it is sent.
GLANCE_HASH = 'sha512'
#: How often the state file is rewritten while digests complete.
STATE_INTERVAL = 1.0
#: How long Glance may take to store an image once it has every byte, and
#: how often its record is fetched meanwhile.
STORE_TIMEOUT = 600
POLL_INTERVAL = 0.25
#: What is worth another try.
TRANSIENT = (errors.Transient,) + connection.CONNECTION_ERRORS

#: A session's phases (oVirt's ImageTransfer names, and the filter's
#: earlier ones): ended without the image (its bytes are gone, and a
#: ranged PUT starts a new session), ended with it, and stopped by the
#: server with every byte kept (a finalize completes it).
FAILED = ('finished_failure', 'failed')
CANCELLED = ('cancelled_user', 'cancelled_system', 'cancelled')
SUCCEEDED = ('finished_success', 'finished')
ENDED = FAILED + CANCELLED + SUCCEEDED
PAUSED_BY_SERVER = 'paused_system'


def content_digest(digest):
    """The ``Content-Digest`` field of a :data:`REQUEST_DIGEST`."""
    return '%s=:%s:' % (REQUEST_DIGEST, base64.b64encode(digest).decode())


class Upload:
    """One upload. :meth:`run` returns a dict of figures for the summary.

    :param source: a :class:`readers.FileSource` or
        :class:`readers.PipeSource` (:func:`readers.open_source`).
    :param target: ``'file'`` (upload) or ``'stage'`` (glance-direct).
    :param chunk_size: the digests' chunk size, rounded up as the
        manifest needs; ranges sent in parallel are cut on its multiples.
    :param digests: the digest algorithm, or None for no manifest.
    """

    def __init__(self, conn, image_id, source, *, target='file',
                 parallel=1, chunk_size=None, state_dir=None,
                 digests=manifest_mod.DEFAULT_ALGORITHM, show_progress=None,
                 resumable=None, log=None, backoff=retry.Backoff):
        self.conn = conn
        self.image_id = image_id
        self.source = source
        self.size = source.size
        self.target = target
        self.parallel = max(1, parallel)
        self.show_progress = show_progress
        self.force_resumable = resumable
        self.log = log or (lambda text: print(text, file=sys.stderr))
        self.new_backoff = backoff
        self.path = '/v2/images/%s/%s' % (image_id, target)
        self.done_status = 'uploading' if target == 'stage' else 'active'
        self.manifest = None
        if digests:
            self.manifest = manifest_mod.Manifest(
                self.size, manifest_mod.chunk_size_for(
                    self.size, chunk_size, digests), digests)
        self.chunk = (self.manifest.chunk_size if self.manifest else
                      manifest_mod.chunk_size_for(self.size, chunk_size))
        self.state_path = state.upload_path(
            state_dir or state.default_dir(), conn.endpoint, image_id,
            target)
        self.identity = dict(source.identity, image_id=image_id,
                             target=target, size=self.size,
                             chunk_size=self.chunk, algorithm=digests)
        self.resumable = False
        self.progress = None
        self._lock = threading.Lock()
        self._saved_at = 0.0
        self.sent = 0
        self.resumed_from = 0
        self.started_over = False

    # -- the whole upload -------------------------------------------------

    def run(self):
        started = time.monotonic()
        image = retry.call(self.new_backoff(),
                           lambda: self.conn.get_image(self.image_id),
                           TRANSIENT)
        # An earlier run of this command sent bytes of this very file (its
        # state names it, modified when it was).
        earlier = self._load_state()
        if image['status'] == 'saving' and earlier:
            self.log('image %s is being stored from an earlier run\'s '
                     'upload; waiting for it' % self.image_id)
            image = self._settled(self.new_backoff(attempts=20))
        if image['status'] == self.done_status and earlier:
            self.log('image %s is already %s from an earlier run: checking '
                     'it' % (self.image_id, self.done_status))
        elif image['status'] != 'queued':
            raise errors.Refused(409, 'image %s is %s, not queued'
                                 % (self.image_id, image['status']))
        else:
            self._send(trusted=earlier)
            image = self._stored()
        verified = self._verify(image)
        recorded = self._record_digests() if self.manifest else None
        state.remove(self.state_path)
        return {'size': self.size, 'sent': self.sent,
                'seconds': time.monotonic() - started,
                'resumed_from': self.resumed_from, 'verified': verified,
                'digests_recorded': recorded,
                'started_over': self.started_over}

    def _load_state(self):
        previous = state.load(self.state_path)
        if not previous or previous.get('identity') != self.identity:
            return False
        if self.manifest:
            self.manifest.digests.update(
                {int(i): base64.b64decode(d)
                 for i, d in previous.get('digests', {}).items()})
        return True

    def _send(self, trusted):
        self.resumable = (self.force_resumable
                          if self.force_resumable is not None
                          else self._discover())
        self.source.start_hash(GLANCE_HASH)
        self.progress = progress_mod.Progress(
            self.size, description='upload', enabled=self.show_progress)
        try:
            if not self.resumable:
                self._plain()
            elif self.source.rereadable:
                self._ranged_file(trusted)
            else:
                self._ranged_pipe(trusted)
        finally:
            self.progress.close()

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

    # -- the session ------------------------------------------------------

    def _session(self):
        """The session's status document, or None when there is none."""
        response = self.conn.request('GET', self.path + '/session')
        with contextlib.closing(response):
            if response.status_code == 404:
                return None
            answers.raise_for_status(response, 'GET the upload session')
            return answers.json_of(response, 'GET the upload session')

    def _held(self, status, trusted):
        """What of the server's session this run keeps: the ``[first,
        last]`` pairs held, and the :class:`readers.PieceCheck` they must
        pass (None when there is nothing to check). Cancels the session
        when it cannot be kept."""
        phase = status and status.get('phase')
        if phase in FAILED:
            self.log('the earlier upload session failed (%s): starting over'
                     % status.get('error'))
        if phase in ENDED or not (status and status.get('ranges_held')):
            return [], None
        if int(status['size']) != self.size:
            self._start_over('the server\'s upload session is for %s bytes, '
                             '%s holds %d' % (status['size'],
                                              self.source.name, self.size))
            return [], None
        algorithm = status.get('piece_digest')
        if status.get('pieces') is not None and algorithm and (
                digests.available(algorithm)):
            check = readers.PieceCheck(status['pieces'], algorithm)
            return check.spans(), check
        if trusted:
            return status['ranges_held'], None
        self._start_over('the server holds bytes without their digests that '
                         'this command did not send from %s as it is now'
                         % self.source.name)
        return [], None

    def _start_over(self, reason):
        """Cancel the session: its bytes are not the source's."""
        response = self.conn.request('DELETE', self.path + '/session')
        with contextlib.closing(response):
            if response.status_code != 404:
                answers.raise_for_status(response,
                                         'DELETE the upload session')
        self.log('%s: cancelled its session, starting over' % reason)
        self.started_over = True

    def _differ(self):
        return 'the server held bytes that differ from %s' % self.source.name

    # -- ranged PUT -------------------------------------------------------

    def _ranged_file(self, trusted):
        held, check = self._held(self._session(), trusted)
        if check is not None and self.source.bad_pieces(check):
            self._start_over(self._differ())
            held = []
        todo = spans.missing(held, self.size)
        self._resuming(todo)
        work = spans.split(todo, self.parallel, self.chunk)
        if not work:
            return
        with concurrent.futures.ThreadPoolExecutor(self.parallel) as pool:
            for future in [pool.submit(self._send_file_span, *span)
                           for span in work]:
                future.result()

    def _resuming(self, todo):
        # Only now that what the server holds is this source's, or was
        # cancelled, does the state name it: a run killed before keeps
        # nothing of an earlier one.
        self._save(force=True)
        self.resumed_from = self.size - spans.total(todo)
        if self.resumed_from:
            self.log('resuming: the server holds %d of %d bytes'
                     % (self.resumed_from, self.size))
        self.progress.update(self.resumed_from)

    def _send_file_span(self, start, stop):
        """One stream's share, :data:`REQUEST_BYTES` at a time; the chunk
        digests are computed as each request's digest is."""
        chunks = None
        position = start
        while position < stop:
            end = min(stop, (position // REQUEST_BYTES + 1) * REQUEST_BYTES)
            consume = None
            if self.manifest:
                if chunks is None or chunks.offset != position:
                    chunks = manifest_mod.ChunkHasher(
                        self.manifest, position, self._chunk_done,
                        read_at=self.source.read_at)
                consume = _fed(chunks)
            digest = self.source.digest(position, end, REQUEST_DIGEST,
                                        consume)
            self._put(position, end, digest, self.source)
            position = end

    def _ranged_pipe(self, trusted):
        """Standard input, in parts held in memory, one ranged PUT each;
        parts the server already holds (an earlier run) are read, checked
        against its pieces, and not sent. The last part to send waits
        until every part was read and checked: it completes the upload."""
        held, check = self._held(self._session(), trusted)
        todo = spans.missing(held, self.size)
        self._resuming(todo)
        chunks = (manifest_mod.ChunkHasher(self.manifest, 0,
                                           self._chunk_done)
                  if self.manifest else None)
        waiting = None
        source = self.source
        while source.position < self.size:
            start = source.position
            data = source.read_exactly(min(REQUEST_BYTES,
                                           self.size - start))
            if chunks is not None:
                chunks.feed(data)
            if check is not None:
                check.feed(start, data)
                if check.bad:
                    self._start_over(self._differ())
                    raise errors.TransferError(
                        'standard input cannot be read again: run the '
                        'command again to upload it from the first byte')
            if not _overlaps(todo, start, source.position):
                continue  # held: counted by _resuming
            if waiting is not None:
                self._put_part(waiting)
            waiting = readers.Part(start, data)
        source.check_end()
        if waiting is not None:
            self._put_part(waiting)

    def _put_part(self, part):
        stop = part.start + len(part.view)
        self._put(part.start, stop,
                  part.digest(part.start, stop, REQUEST_DIGEST), part)

    def _put(self, start, stop, digest, source):
        """PUT bytes ``[start, stop)`` with their ``digest``, resuming after
        breaks from what the server holds; ``source`` has the
        ``body(start, stop, on_bytes)`` and ``digest(start, stop)`` of any
        range of them (:class:`readers.FileSource`,
        :class:`readers.Part`)."""
        backoff = self.new_backoff()
        position = start
        while position < stop:
            attempt = [0]

            def on_bytes(data, attempt=attempt):
                attempt[0] += len(data)
                self.progress.update(len(data))
            what = 'PUT bytes %d-%d' % (position, stop - 1)
            headers = {
                'Content-Range': 'bytes %d-%d/%d' % (position, stop - 1,
                                                     self.size),
                'Content-Length': str(stop - position),
                'Content-Digest': content_digest(digest)}
            try:
                # Closed at once: a body refers to itself (its source is
                # one of its methods), so only the garbage collector would
                # free its last piece otherwise, and it runs by objects
                # made, not bytes held.
                body = source.body(position, stop, on_bytes)
                try:
                    response = self.conn.put_data(
                        self.image_id, body, target=self.target,
                        size=self.size, headers=headers)
                finally:
                    if hasattr(body, 'close'):  # not a part in memory
                        body.close()
                with contextlib.closing(response):
                    answers.raise_for_status(response, what)
                self._count(attempt[0])
                return
            except errors.Refused as exc:
                if exc.status == 400 and 'digest' in str(exc).lower():
                    self.log('%s arrived damaged: sending them again' % what)
                elif exc.status != 409:
                    raise
                reason = exc  # 409: another writer still winding up, or done
            except TRANSIENT as exc:
                reason = exc
            self._count(attempt[0])
            self.progress.update(-attempt[0])
            backoff.failed(reason)
            status = retry.call(backoff, self._session, TRANSIENT)
            phase = status and status.get('phase')
            if phase in FAILED:
                raise errors.TransferError('the upload session failed: %s'
                                           % status.get('error'))
            held = status.get('ranges_held') if status else None
            if status is None or phase in ENDED:
                # No session: finished, or gone (expired, cancelled).
                image = retry.call(
                    backoff, lambda: self.conn.get_image(self.image_id),
                    TRANSIENT)
                if image['status'] != 'queued':
                    return
                held = None
            left = [(a, b) for a, b in (
                (max(a, position), min(b, stop))
                for a, b in spans.missing(held or [], self.size)) if b > a]
            new_position = left[0][0] if left else stop
            self.progress.update(new_position - position)
            if new_position > position:
                backoff.progressed()
                if new_position < stop:
                    digest = source.digest(new_position, stop,
                                           REQUEST_DIGEST)
            position = new_position

    # -- plain PUT --------------------------------------------------------

    def _plain(self):
        self._save(force=True)
        backoff = self.new_backoff()
        headers = {'Content-Length': str(self.size)}
        while True:
            attempt = [0]
            chunks = (manifest_mod.ChunkHasher(self.manifest, 0,
                                               self._chunk_done)
                      if self.manifest else None)

            def on_bytes(data, chunks=chunks, attempt=attempt):
                attempt[0] += len(data)
                if chunks is not None:
                    chunks.feed(data)
                self.progress.update(len(data))
            try:
                response = self.conn.put_data(
                    self.image_id, self.source.body(0, self.size, on_bytes),
                    target=self.target, size=self.size, headers=headers)
                with contextlib.closing(response):
                    answers.raise_for_status(response, 'PUT the image')
                self._count(attempt[0])
                return
            except TRANSIENT as exc:
                self._count(attempt[0])
                self.progress.update(-attempt[0])
                if not self.source.rereadable:
                    raise errors.TransferError(
                        'the upload broke (%s) and standard input cannot '
                        'be read again; this Glance keeps no partial '
                        'uploads' % exc) from exc
                backoff.failed(exc)
            if self._settled(backoff)['status'] != 'queued':
                return
            self.log('the upload broke; Glance keeps nothing of it: '
                     'starting again')

    # -- completion -------------------------------------------------------

    def _settled(self, backoff):
        """The image's record once Glance no longer says ``saving``."""
        return self.conn.wait_for_image(
            self.image_id, lambda image: image['status'] != 'saving',
            timeout=STORE_TIMEOUT, interval=POLL_INTERVAL, backoff=backoff,
            wanted='saving no more')

    def _stored(self):
        """The image's record once Glance has all of it: the request that
        completed it may have been cut while Glance stored it."""
        backoff = self.new_backoff()

        def stored(image):
            if image['status'] == self.done_status:
                return True
            if image['status'] not in ('queued', 'saving', 'importing'):
                raise errors.TransferError('image %s is %s after the upload'
                                           % (self.image_id, image['status']))
            if image['status'] == 'queued':
                self._still_queued(backoff)
            return False
        return self.conn.wait_for_image(
            self.image_id, stored, timeout=STORE_TIMEOUT,
            interval=POLL_INTERVAL, backoff=self.new_backoff(attempts=20),
            wanted=self.done_status)

    def _still_queued(self, backoff):
        """Every byte was sent and the image is still queued: raise unless
        the session is on its way to Glance; have the server hand it to
        Glance again when it paused it after a failure of its own."""
        status = (retry.call(backoff, self._session, TRANSIENT)
                  if self.resumable else None)
        phase = status and status.get('phase')
        if status is None or phase in FAILED + CANCELLED:
            raise errors.TransferError(
                'the image is still queued after the upload%s'
                % (': %s' % status['error'] if status and status.get('error')
                   else ''))
        if phase in SUCCEEDED:
            return
        if spans.missing(status['ranges_held'], self.size):
            raise errors.TransferError(
                'the server is missing bytes after the upload')
        if phase == PAUSED_BY_SERVER:
            self.log('the server could not hand the image to Glance (%s): '
                     'finalizing it again' % status.get('error'))
            try:
                response = self.conn.request(
                    'POST', self.path + '/session/finalize')
                with contextlib.closing(response):
                    if response.status_code != 409:  # finalizing already
                        answers.raise_for_status(response,
                                                 'finalize the upload')
            except TRANSIENT as exc:
                backoff.failed(exc)

    def _verify(self, image):
        """The name of the check the image passed: its ``os_hash_value``
        (else ``checksum``) against the source's hash. Raises
        :class:`~errors.IntegrityError` when they differ."""
        algorithm = image.get('os_hash_algo')
        expected = image.get('os_hash_value')
        if not (algorithm and expected):
            algorithm, expected = 'md5', image.get('checksum')
        if not expected:
            return self._verify_staged()
        if not digests.available(algorithm):
            raise errors.TransferError(
                'image %s records its %s, which cannot be computed here: '
                'not verified' % (self.image_id, algorithm))
        actual = self.source.hexdigest(algorithm)
        if actual != expected:
            raise errors.IntegrityError(
                'image %s is not %s: the image\'s %s is %s, %s\'s is %s'
                % (self.image_id, self.source.name, algorithm, expected,
                   self.source.name, actual))
        return algorithm

    def _verify_staged(self):
        """Data Glance records no hash of (staged, until it is imported).
        A server that lists pieces checked each request's
        ``Content-Digest`` before it kept its bytes, and this command
        checked every piece held from earlier runs before it resumed:
        every byte was compared with the source on its way. Elsewhere the
        data is not verified, and the command says so."""
        try:
            status = self._session()
        except errors.Refused:
            status = None
        algorithm = status and status.get('piece_digest')
        if status is not None and status.get('phase') in SUCCEEDED and (
                algorithm == REQUEST_DIGEST):
            return '%s of each request' % algorithm
        self.log('warning: image %s records no hash of its data and the '
                 'server checked no digests of it: not verified'
                 % self.image_id)
        return None

    # -- digests and state ------------------------------------------------

    def _record_digests(self):
        """Record the chunk digests: False when Glance refuses to."""
        self._fill_digests()
        try:
            self.conn.update_properties(self.image_id,
                                        self.manifest.to_properties())
        except errors.Refused as exc:
            if exc.status not in (403, 413):  # protected; over the quota
                raise
            self.log('warning: the chunk digests were not recorded in image '
                     '%s (%s); its data is stored and verified' % (
                         self.image_id, exc))
            return False
        return True

    def _chunk_done(self, index, digest):
        self.manifest.digests[index] = digest
        self._save()

    def _fill_digests(self):
        """Digests of chunks an earlier run had the server hold but did not
        keep in its state, read from the file."""
        missing = [i for i in range(self.manifest.count)
                   if i not in self.manifest.digests]
        if missing and not self.source.rereadable:
            raise errors.TransferError(
                'digests of %d chunks are missing and standard input cannot '
                'be read again' % len(missing))
        for index in missing:
            start, stop = self.manifest.bounds(index)
            self.manifest.digests[index] = self.manifest.truncate(
                readers.digest_of(self.source.fd, start, stop,
                                  self.manifest.algorithm))

    def _save(self, force=False):
        now = time.monotonic()
        with self._lock:
            if not force and now - self._saved_at < STATE_INTERVAL:
                return
            self._saved_at = now
            digests_held = {}
            if self.manifest:
                digests_held = {
                    str(i): base64.b64encode(d).decode()
                    for i, d in list(self.manifest.digests.items())}
            state.save(self.state_path, {'identity': self.identity,
                                         'digests': digests_held})

    def _count(self, count):
        with self._lock:
            self.sent += count


def _fed(chunks):
    return lambda offset, data: chunks.feed(data)


def _overlaps(todo, start, stop):
    return any(a < stop and b > start for a, b in todo)

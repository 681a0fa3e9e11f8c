"""Store-native sessions in an S3 store: every range goes straight up as
parts of the multipart upload of the image's own key, and the session is
kept in the bucket beside it, so any API node continues it.

As tusd's S3 store does, the bytes never touch the API node's disk: a
request's body is cut into parts of the session's part size (fixed from
the declared size when the session is created, and advertised as
``part_size`` in the status document), each part sent with
``UploadPart`` as soon as it is whole. The held ranges are recomputed from
the multipart upload's part listing on every request, on any node. Finalize
completes the upload (``CompleteMultipartUpload``): the object
``<image_id>`` is then the one glance_store's driver would have written,
and its location goes to Glance (:mod:`sizeaware.sessions.locations`).

Objects in the store's bucket, under ``sizeaware-sessions/<image_id>/``:

``record``
    the :class:`~sizeaware.sessions.record.Record` (JSON), with the
    multipart upload's id and the part size;
``crc.<n>.<crc32c>``
    empty: part ``n`` (1-based) was uploaded whole, with that CRC-32C; a
    part counts as held once listed by S3 *and* so marked, so a part whose
    upload a killed worker left unconfirmed is sent again;
``tail.<n>.<start>``, ``tailcrc.<n>.<start>.<end>.<crc32c>``
    the bytes of part ``n`` from ``start`` on that a request received when
    it ended mid-part (tusd's ``.part`` object), and their mark: the next
    write starting at ``end`` takes them as the beginning of its part.
    A write must start on a part boundary or where a tail ends; it may end
    anywhere.

S3 has no locks. Within one API node the session's requests exclude one
another as the spool's do (record locks on a file of the node); across
nodes, two requests may send one part at once (it ends as the last one
sent, each with the bytes of the same range, compared with what is held
by their MD5), changes to the record are the last writer's, and a
finalize is completed once: S3 completes a multipart upload once, and a
second finalize finds the object made.
"""

import base64
import contextlib
import functools
import hashlib
import os
import re
import time

import crc32c
from oslo_log import log as logging

from sizeaware import exceptions
from sizeaware import stream
from sizeaware.sessions import limits as limits_mod
from sizeaware.sessions import locks
from sizeaware.sessions import ranges
from sizeaware.sessions import record as records
from sizeaware.sessions import storage
from sizeaware.sessions.storage import ledger

LOG = logging.getLogger(__name__)

PREFIX = 'sizeaware-sessions/'
#: The smallest part: S3's own minimum is 5 MiB; 8 MiB is what the
#: ``sizeaware`` client sends per request.
MIN_PART = 8 * 1024 * 1024
#: S3 allows at most this many parts in one upload.
MAX_PARTS = 10000
_RECORD_LOCK = ledger.RECORD_LOCK
#: What S3 answers for an upload id it no longer knows (radosgw says
#: ``NoSuchKey`` where AWS says ``NoSuchUpload``).
_NO_UPLOAD = ('NoSuchUpload', 'NoSuchKey')
_CRC = re.compile(r'crc\.(\d+)\.(\d+)$')
_TAIL = re.compile(r'tailcrc\.(\d+)\.(\d+)\.(\d+)\.(\d+)$')


def part_size(size):
    """The part size of an image of ``size`` bytes: :data:`MIN_PART`, or
    more (in whole MiB) for an image that would need more than
    :data:`MAX_PARTS` of them."""
    mib = 1024 * 1024
    need = -(-size // MAX_PARTS)
    return max(MIN_PART, -(-need // mib) * mib)


class Buckets(storage.Storage):
    """The store-native sessions of every S3 store Glance has.

    :param in_store: the :class:`~sizeaware.sessions.storage.in_store.
        InStore` that reaches the stores' buckets.
    :param lock_dir: a directory of this node for the sessions' record
        locks (the spool's).
    """

    def __init__(self, in_store, lock_dir, limits=None, clock=time.time):
        self.in_store = in_store
        self.lock_dir = lock_dir
        self.limits = limits or limits_mod.Limits()
        self.clock = clock

    def session(self, image_id, target, caller, part=None, ended=False):
        if target != 'file' or part is not None:
            return None
        return ledger.found(self, [
            functools.partial(BucketSession, self, backend, image_id, caller)
            for backend in self.in_store.s3_backends()], caller, ended)

    def open(self, key, caller):
        return BucketSession(self, key[0], key[1], caller)

    def create(self, image_id, target, caller, size, sha256=None, *,
               part=None, reserved=False, gone=None, place=None,
               others=(), **fields):
        """A session whose bytes go to ``place`` (``(backend, url)``), its
        multipart upload opened now.

        :param others: records of other storages' sessions, counted
            against the project's limit.
        """
        backend, url = place
        now = self.clock()
        if not reserved:
            limits_mod.check(
                self.limits, [rec for _, rec in self.records()]
                + list(others), caller[0], size, now,
                gone=gone or (lambda rec: False), spooled=False)
        s3, bucket = self.in_store.s3(backend)
        existing = self.session(image_id, target, caller, ended=True)
        if existing is not None:
            if not existing.record.ended:
                return existing
            existing.remove()
        upload = s3.create_multipart_upload(Bucket=bucket, Key=image_id)
        rec = records.new(image_id, target, caller, size, now,
                          self.limits.expiry(now, now), sha256=sha256,
                          store=backend, location=url,
                          multipart=upload['UploadId'],
                          part_size=part_size(size), **fields)
        try:
            _put(s3, bucket, _key(image_id, 'record'), rec.to_json())
        except BaseException:
            s3.abort_multipart_upload(Bucket=bucket, Key=image_id,
                                      UploadId=upload['UploadId'])
            raise
        session = BucketSession(self, backend, image_id, caller)
        records.log_change(LOG, session.record,
                           getattr(caller, 'request_id', None))
        return session

    def records(self, limit=None):
        for backend in self.in_store.s3_backends():
            s3, bucket = self.in_store.s3(backend)
            pages = s3.get_paginator('list_objects_v2').paginate(
                Bucket=bucket, Prefix=PREFIX, Delimiter='/')
            count = 0
            for page in pages:
                for common in page.get('CommonPrefixes', ()):
                    image_id = common['Prefix'][len(PREFIX):].rstrip('/')
                    try:
                        text = _get(s3, bucket, _key(image_id, 'record'))
                    except KeyError:
                        continue
                    try:
                        rec = records.Record.from_json(text)
                    except (ValueError, TypeError):
                        continue
                    yield (backend, image_id), rec
                    count += 1
                    if limit is not None and count >= limit:
                        return

    def claim_sweep(self, interval, now):
        return True

    def sweep_leftovers(self, now):
        pass


class BucketSession(ledger.NodeLocks, ledger.LedgerSession):
    """One S3 store-native session, opened for the length of one request.

    :raises sizeaware.exceptions.SessionNotFound: when there is none.
    """

    def __init__(self, buckets, backend, image_id, caller=None):
        self.storage = buckets
        self.backend = backend
        self.image_id = image_id
        self.caller = caller
        self.s3, self.bucket = buckets.in_store.s3(backend)
        self.record = self._read_record()
        self._born = self.record.created_at
        #: ``{(start, end): crc32c}`` of what this request's writer sent.
        self.crcs = {}
        os.makedirs(buckets.lock_dir, 0o700, exist_ok=True)
        self.lock_fd = os.open(os.path.join(
            buckets.lock_dir, '%s.%s.lock' % (backend, image_id)),
            os.O_RDWR | os.O_CREAT, 0o600)

    def close(self):
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None
        self.finalizer = False

    # -- reading ------------------------------------------------------------

    def pieces(self):
        """The parts S3 lists that are marked whole, with their CRC-32C,
        and the tails; once the upload is complete (S3 lists no parts any
        more), the marks alone."""
        rec = self.record
        crcs, tails = self._marks()
        listed = self._parts()
        if listed is not None:
            crcs = {number: crcs[number] for number, _, _ in listed
                    if number in crcs}
        found = []
        for number, crc in crcs.items():
            start = (number - 1) * rec.part_size
            found.append((start, min(start + rec.part_size, rec.size), crc))
        for _, start, end, crc in tails:
            found.append((start, end, crc))
        return sorted(found)

    def reader(self, stream_class=stream.BodyStream, live=None):
        answer = self._get_object()
        body = answer['Body']
        reader = stream_class(body.read, self.record.size, delimited=True)
        close = reader.close

        def close_all():
            close()
            body.close()
        reader.close = close_all
        return reader

    def stored_size(self):
        return self._get_object(head=True)['ContentLength']

    # -- writing ------------------------------------------------------------

    @contextlib.contextmanager
    def writer(self, first, last, checkpoints=True, limit=None,
               digest=None):
        """Hold bytes ``first`` to ``last`` (on this node) and yield a
        :class:`PartWriter` class sending them up as parts.

        :raises sizeaware.exceptions.RangeNotSatisfiable: the range starts
            neither on a part boundary nor where a tail ends.
        :raises sizeaware.exceptions.UploadConflict: while another request
            of this node writes any of these bytes.
        """
        rec = self.record
        if not locks.try_acquire(self.lock_fd, 1 + first, last - first + 1):
            raise exceptions.UploadConflict(
                'Another request is writing some of bytes %d-%d of this '
                'image; retry once it has ended.' % (first, last))
        try:
            with self._locked():
                self._recover()
                held = self.held()
                _, tails = self._marks()
            tail = None
            if first % rec.part_size:
                number = first // rec.part_size + 1
                tail = next(((s, e) for n, s, e, _ in tails
                             if n == number and e == first), None)
                if tail is None:
                    raise exceptions.RangeNotSatisfiable(
                        'Bytes go up to the store in parts of %d bytes: a '
                        'range starts on a part boundary or where the bytes '
                        'held in its part end (see the session\'s '
                        'part_size and ranges_held).' % rec.part_size,
                        rec.size)
            yield functools.partial(PartWriter, session=self, start=first,
                                    held=held, tail=tail, limit=limit,
                                    digest=digest, claim=checkpoints)
        finally:
            locks.release(self.lock_fd, 1 + first, last - first + 1)

    def assemble(self):
        """Complete the multipart upload: the object ``<image_id>`` holds
        the image. A second call (another node's finalize came first)
        finds the object made.

        :raises sizeaware.exceptions.CommitFailed: S3 refused.
        """
        rec = self.record
        parts = [{'PartNumber': number, 'ETag': etag}
                 for number, _, etag in self._parts() or ()]
        try:
            self.s3.complete_multipart_upload(
                Bucket=self.bucket, Key=self.image_id,
                UploadId=rec.multipart, MultipartUpload={'Parts': parts})
        except self._client_error() as exc:
            if _code(exc) not in _NO_UPLOAD or not self._object_exists():
                raise exceptions.CommitFailed(
                    'S3 did not complete the image\'s upload: %s.' % exc
                ) from exc
        if rec.object_id is None:
            # The object's ETag: the one object a later drop may remove.
            with self._locked():
                rec = self._read_record()
                rec.object_id = self._get_object(head=True)['ETag']
                self._write_record(rec)
                self.record = rec

    def join(self, partials):
        raise exceptions.UploadConflict(
            'A store-native upload takes no partial uploads.')

    def remove(self, only_if_idle=False):
        with self._locked():
            if only_if_idle and self.writing():
                return 0
            rec = self._read_record()
            self._drop(rec)
            for key in self._keys():
                self.s3.delete_object(Bucket=self.bucket, Key=key)
        return 1

    # -- the ledger's primitives (:mod:`~sizeaware.sessions.storage.ledger`)

    def _read_record(self):
        try:
            text = _get(self.s3, self.bucket, _key(self.image_id, 'record'))
        except KeyError:
            raise exceptions.SessionNotFound(
                'No upload session for this image.') from None
        return records.Record.from_json(text)

    def _write_record(self, rec):
        _put(self.s3, self.bucket, _key(self.image_id, 'record'),
             rec.to_json())

    def _append_piece(self, start, end, crc):
        """Mark each part of ``[start, end)`` whole, or its tail kept:
        a claim spans whole parts and at most one tail, each with the CRC
        its writer found (:attr:`crcs`)."""
        rec = self.record
        position = start
        while position < end:
            number = position // rec.part_size + 1
            stop = min(number * rec.part_size, rec.size, end)
            piece_crc = crc if (position, stop) == (start, end) else (
                self.crcs[(position, stop)])
            if stop == min(number * rec.part_size, rec.size):
                name = 'crc.%d.%d' % (number, piece_crc)
            else:
                name = 'tailcrc.%d.%d.%d.%d' % (number, position, stop,
                                                 piece_crc)
            _put(self.s3, self.bucket, _key(self.image_id, name), '')
            position = stop

    def _clear_pieces(self):
        for key in self._keys():
            if not key.endswith('/record'):
                self.s3.delete_object(Bucket=self.bucket, Key=key)

    def _recover_writers(self, rec):
        pass

    def _drop_data(self):
        if not self.record.dropped:
            self._drop(self.record)
            self._write_record(self.record)

    def _open_data(self, writable=True):
        raise exceptions.UploadConflict(
            'An S3 upload\'s parts are read once it is complete.')

    def _sync_data(self):
        pass

    @contextlib.contextmanager
    def _locked(self):
        locks.acquire(self.lock_fd, *_RECORD_LOCK)
        try:
            if self._read_record().created_at != self._born:
                raise exceptions.SessionNotFound(
                    'The upload session of this image has ended.')
            yield
        finally:
            locks.release(self.lock_fd, *_RECORD_LOCK)

    # -- internals ----------------------------------------------------------

    def _drop(self, rec):
        """Abort the upload and remove the object it made, unless handed
        over or dropped already; only that object (by its ETag): another
        of the same key, made by a plain upload after the session ended,
        is Glance's."""
        if rec.handed_over or rec.dropped or (
                rec.phase == records.FINISHED_SUCCESS):
            return
        if rec.multipart is not None:
            with contextlib.suppress(self._client_error()):
                self.s3.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.image_id,
                    UploadId=rec.multipart)
        if rec.object_id is not None:
            with contextlib.suppress(exceptions.SessionNotFound):
                if self._get_object(head=True)['ETag'] == rec.object_id:
                    self.s3.delete_object(Bucket=self.bucket,
                                          Key=self.image_id)
        for key in self._keys():
            if '/tail' in key:
                self.s3.delete_object(Bucket=self.bucket, Key=key)
        rec.dropped = True

    def _parts(self):
        """``(number, size, etag)`` of the parts S3 lists; None once the
        upload is no more (completed, or aborted)."""
        found = []
        try:
            pages = self.s3.get_paginator('list_parts').paginate(
                Bucket=self.bucket, Key=self.image_id,
                UploadId=self.record.multipart)
            for page in pages:
                for part in page.get('Parts', ()):
                    found.append((part['PartNumber'], part['Size'],
                                  part['ETag']))
        except self._client_error() as exc:
            if _code(exc) not in _NO_UPLOAD:
                raise
            return None
        return found

    def _marks(self):
        """``({part: crc}, [(part, start, end, crc)])`` of the marks."""
        crcs, tails = {}, []
        for key in self._keys():
            name = key.rsplit('/', 1)[-1]
            match = _CRC.match(name)
            if match:
                crcs[int(match.group(1))] = int(match.group(2))
                continue
            match = _TAIL.match(name)
            if match:
                tails.append(tuple(int(g) for g in match.groups()))
        # Parts sent whole make their tails moot.
        return crcs, [t for t in tails if t[0] not in crcs]

    def _keys(self):
        keys = []
        pages = self.s3.get_paginator('list_objects_v2').paginate(
            Bucket=self.bucket, Prefix=_key(self.image_id, ''))
        for page in pages:
            keys += [item['Key'] for item in page.get('Contents', ())]
        return keys

    def _tail_bytes(self, number, start):
        return _get(self.s3, self.bucket, _key(
            self.image_id, 'tail.%d.%d' % (number, start)), raw=True)

    def _get_object(self, head=False):
        call = self.s3.head_object if head else self.s3.get_object
        try:
            return call(Bucket=self.bucket, Key=self.image_id)
        except self._client_error() as exc:
            if _code(exc) in ('NoSuchKey', '404'):
                raise exceptions.SessionNotFound(
                    'The upload session of this image has ended.') from None
            raise

    def _object_exists(self):
        try:
            self._get_object(head=True)
        except exceptions.SessionNotFound:
            return False
        return True

    def _client_error(self):
        return self.s3.exceptions.ClientError


class PartWriter(storage.Writer):
    """The stream base, cutting a request body into parts and sending each
    up as soon as it is whole (or ends the image); what is left when the
    body ends mid-part is kept as the part's tail.

    A part the session holds already is compared, not sent: its bytes
    must have the MD5 S3 lists for it.
    """

    def __init__(self, pull, expected=None, delimited=False, *, session,
                 start, held, tail, claim=True, **kwargs):
        super().__init__(pull, expected, delimited, **kwargs)
        self.session = session
        self.start = start
        self.held = held
        self.part_size = session.record.part_size
        self.size = session.record.size
        # The part being filled: where it starts, and its bytes so far
        # (a tail's, first).
        self._part_start = start
        self._buffer = bytearray()
        if tail is not None:
            self._part_start = tail[0]
            self._buffer += session._tail_bytes(
                tail[0] // self.part_size + 1, tail[0])
        self._claim = claim
        # Claims start where the part being filled does.
        self._claimed = self._part_start

    def store(self, data):
        self._buffer += data
        while self._buffer and self._part_start < self.size:
            number = self._part_start // self.part_size + 1
            part_end = min(number * self.part_size, self.size)
            if self._part_start + len(self._buffer) < part_end:
                return
            take = part_end - self._part_start
            part = bytes(self._buffer[:take])
            del self._buffer[:take]
            self._send(number, part)
            self._part_start = part_end

    def _send(self, number, part):
        session = self.session
        first = (number - 1) * self.part_size
        md5 = hashlib.md5(part, usedforsecurity=False)
        if ranges.covers(self.held, first, first + len(part)):
            listed = {n: etag for n, _, etag in session._parts() or ()}
            if listed.get(number, '').strip('"') != md5.hexdigest():
                raise exceptions.UploadConflict(
                    'Bytes %d-%d differ from the bytes already received '
                    'for this image.' % (first, first + len(part) - 1))
        else:
            session.s3.upload_part(
                Bucket=session.bucket, Key=session.image_id,
                UploadId=session.record.multipart, PartNumber=number,
                Body=part, ContentMD5=_b64(md5.digest()))
        crc = crc32c.crc32c(part)
        session.crcs[(first, first + len(part))] = crc
        if self._claim:
            session.commit(first, first + len(part), crc, final=False,
                           synced=True)
            self._claimed = first + len(part)

    def finish_tail(self):
        """Keep what is left mid-part as the part's tail (the request's
        body ended there); its range, for the request's last claim."""
        if not self._buffer:
            return None
        session = self.session
        number = self._part_start // self.part_size + 1
        _put(session.s3, session.bucket, _key(
            session.image_id, 'tail.%d.%d' % (number, self._part_start)),
            bytes(self._buffer))
        end = self._part_start + len(self._buffer)
        session.crcs[(self._part_start, end)] = crc32c.crc32c(self._buffer)
        self._buffer = bytearray()
        self._part_start = end
        return end

    def unclaimed(self):
        """What this request sent and did not claim yet: whole parts (a
        body with a digest claims nothing before it is checked) and the
        tail it keeps; one claim, marked part by part."""
        end = self.finish_tail() or self._part_start
        if end <= self._claimed:
            return (self._claimed, self._claimed, 0)
        first = self._claimed
        crc = self.session.crcs.get((first, end))
        if crc is None:
            # Several pieces: each is marked with its own CRC-32C.
            crc = 0
        return (first, end, crc)


def _key(image_id, name):
    return '%s%s/%s' % (PREFIX, image_id, name)


def _put(s3, bucket, key, body):
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode()
                  if isinstance(body, str) else body)


def _get(s3, bucket, key, raw=False):
    """The object's body (text), or KeyError."""
    try:
        answer = s3.get_object(Bucket=bucket, Key=key)
    except s3.exceptions.ClientError as exc:
        if _code(exc) in ('NoSuchKey', '404'):
            raise KeyError(key) from None
        raise
    with contextlib.closing(answer['Body']) as body:
        data = body.read()
    return data if raw else data.decode()


def _code(exc):
    return exc.response.get('Error', {}).get('Code')


def _b64(digest):
    return base64.b64encode(digest).decode()

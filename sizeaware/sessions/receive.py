"""The one receive flow: a request's body into a session, for every
protocol.

The protocols (:mod:`~sizeaware.sessions.protocols`) only translate: from
their headers to a range, a length, a declared digest; from
:class:`Received` back to their answer. What happens in between is the
same for all of them and lives here once:

1. the session must take bytes (its phase) and its image must still exist
   (a deleted image ends its session as ``cancelled_system``: 404);
2. the storage holds the bytes' range for this request and yields a writer
   (:class:`~sizeaware.sessions.storage.Writer`) that the body streams
   through;
3. a body cut off (the client gone or silent) keeps what arrived, unless it
   declared a digest: bytes that cannot be verified are not kept;
4. a declared digest (``Content-Digest``, tus ``Upload-Checksum``) is
   checked before the bytes are claimed; the claim records their CRC-32C;
5. the request whose claim completes the image finalizes it
   (:mod:`~sizeaware.sessions.finalize`), while its bytes still arrive when
   ``finalize_while_receiving`` is on.

What a request keeps when its body breaks: every byte its stream read
from the server. The WSGI server may hold a little more it never handed
on: the read in progress (at most 64 KiB, :data:`sizeaware.stream.
DEFAULT_READ_SIZE`) of a Content-Length body, and the chunk being received
of a chunked one (uwsgi and eventlet hand over whole chunks only).
"""

import contextlib
import dataclasses

from sizeaware import digests
from sizeaware import exceptions
from sizeaware import framing
from sizeaware import stream
from sizeaware.sessions import downstream
from sizeaware.sessions import finalize
from sizeaware.sessions import ranges
from sizeaware.sessions import record as records
from sizeaware.sessions import storage as storages


class Live:
    """The bytes a request is still receiving, for a reader of the whole
    image that follows them as they arrive.

    :param first: their offset in the image.
    :param body: the request's body (a storage writer, which also stores
        them), of ``end - first`` bytes.
    :param ended: called once the body has ended, before its last piece
        is handed on: claims the bytes; may raise to refuse them.

    Whatever the body or ``ended`` raised is kept in :attr:`error`: it is
    the request's, whoever read the image saw it first.
    """

    def __init__(self, first, body, ended):
        self.first = first
        self.end = first + body.expected
        self.body = body
        self.ended = ended
        self.error = None
        #: Whether the body ended and ``ended`` claimed it.
        self.complete = False

    def read(self, size):
        try:
            # The body raises rather than end short.
            data = self.body.read(size)
            if self.body.received == self.body.expected:
                self.ended()
                self.complete = True
            return data
        except Exception as exc:
            self.error = exc
            raise


@dataclasses.dataclass
class Received:
    """What a request's body did to its session.

    :ivar held: the ranges held after it.
    :ivar response: Glance's answer when the request finalized the image,
        else None.
    """
    held: list
    response: object = None


def open_session(app, storage, environ, image_id, target, size, **fields):
    """The caller's live session of this image and target, created (the
    image must be visible to the caller and ``queued``) when there is
    none.

    :param fields: :meth:`~sizeaware.sessions.storage.Storage.create`'s.
    :returns: ``(session, created)``; a session created here had its image
        checked just now.
    :raises sizeaware.exceptions.ImageNotFound:
    :raises sizeaware.exceptions.SessionNotFound: another caller's.
    :raises sizeaware.exceptions.UploadConflict: the image is not queued.
    """
    caller = downstream.caller(environ)
    session = storage.session(image_id, target, caller,
                              part=fields.get('part'))
    if session is not None:
        return session, False
    check_queued(app, environ, image_id)
    # Glance's own header for the store an upload goes to.
    fields.setdefault('backend', environ.get('HTTP_X_IMAGE_META_STORE'))
    return storage.create(image_id, target, caller, size,
                          gone=_gone(app, environ, storage), **fields), True


def check_queued(app, environ, image_id):
    """:raises UploadConflict: unless the image is ``queued``."""
    image = downstream.get_image(app, environ, image_id)
    if image.get('status') != 'queued':
        raise exceptions.UploadConflict(
            'The image is %s; only a queued image takes an upload.'
            % image.get('status'))


def check_image(app, environ, session):
    """The session's image as the caller sees it; a session whose image
    is gone ends, as ``cancelled_system``.

    :raises sizeaware.exceptions.ImageNotFound:
    """
    try:
        return downstream.get_image(app, environ, session.record.image_id)
    except exceptions.ImageNotFound:
        if not session.record.ended:
            session.end(records.CANCELLED_SYSTEM,
                        'The image was deleted, or is no longer visible to '
                        'the session\'s owner.')
        raise


def receive(app, environ, session, first, last, length, chunked, *,
            declared=None, limit=None, final=True, through=False,
            mismatch=exceptions.DigestMismatch, before=None,
            image_checked=False):
    """Write the request's body as bytes ``first`` to ``last`` (at most)
    of the session, and finalize when it completes the image.

    :param length: the body's length: its Content-Length, or for a
        chunked body the length it must have, or None (up to ``limit``).
    :param declared: ``(algorithm, digest)`` the body must match.
    :param limit: the most bytes a chunked body may have.
    :param final: the request's claim may complete the image (not so for
        a tus partial upload).
    :param through: finalize while the bytes that complete the image
        arrive.
    :param mismatch: the error class for a body that fails ``declared``.
    :param before: called with the held ranges once this request holds
        its bytes, before the body is read: may refuse (a tus offset).
    :param image_checked: the image was asked for by this request already
        (it created the session).
    :returns: a :class:`Received`.
    """
    session.check_writable()
    digest = None if declared is None else digests.new(declared[0])
    rec = session.record

    def claim(final=final):
        if declared is not None and digest.digest() != declared[1]:
            raise mismatch(
                'The body does not match its declared %s digest; none of '
                'it was kept.' % declared[0])
        return session.commit(*body.unclaimed(), final=final)

    with session.writer(first, last, checkpoints=declared is None,
                        limit=limit, digest=digest) as writer_class:
        # Asked while this request holds its bytes: a status document
        # read meanwhile says a request is writing.
        if not image_checked:
            check_image(app, environ, session)
        if before is not None:
            before(session.held())
        body = framing.open_body(environ, length, chunked, writer_class)
        through = (through and final and length is not None
                   and rec.parts is None and rec.location is None
                   and ranges.is_complete(
                       ranges.add(session.held(), first, first + length),
                       rec.size))
        try:
            if through:
                def ended():
                    if not claim()[1]:
                        raise exceptions.UploadConflict(
                            'The upload of this image is being finished by '
                            'another request.')
                live = Live(first, body, ended)
                response = finalize.finalize(app, environ, session,
                                             live=live)
                if live.complete:
                    return Received([(0, rec.size)], response)
                # Glance stopped reading before the body's end, for a
                # reason of its own: unless that ended the session, the
                # rest is still the client's, and kept for the next
                # finalize.
                if session.refresh().ended:
                    return Received(session.held(), response)
                while body.read(stream.DEFAULT_READ_SIZE):
                    pass
                return Received(claim(final=False)[0], response)
            while body.read(stream.DEFAULT_READ_SIZE):
                pass
        except (exceptions.ClientDisconnected, exceptions.ClientTimeout,
                exceptions.SpoolFull):
            # The connection broke, or the spool's disk is full: what
            # arrived and was written is the client's and is kept, unless
            # it must be verified first; the error still answers (408,
            # 507) or is logged (499).
            if declared is None and body.received:
                # Unless the session ended meanwhile (cancelled): then
                # nothing is kept, and the request's own error stands.
                with contextlib.suppress(exceptions.UploadConflict,
                                         exceptions.SessionNotFound):
                    session.commit(*body.unclaimed(), final=False)
            raise
        finally:
            body.close()
        held, finalizing = claim()
    if finalizing:
        return Received(held, finalize.finalize(app, environ, session))
    return Received(held)


def _gone(app, environ, storage):
    """``gone(record)`` for the limits: whether the image of a session of
    the caller's project is gone, ending that session if so."""
    caller = downstream.caller(environ)

    def gone(rec):
        try:
            downstream.get_image(app, environ, rec.image_id)
        except exceptions.ImageNotFound:
            owner = storages.Caller(rec.project_id, rec.user_id,
                                    caller.request_id)
            session = storage.session(rec.image_id, rec.target, owner,
                                      part=_part(rec))
            if session is not None:
                try:
                    check_image(app, environ, session)
                except exceptions.ImageNotFound:
                    pass
                finally:
                    session.close()
            return True
        except (exceptions.SizeawareError, downstream.GlanceAnswer):
            return False
        return False
    return gone


def _part(rec):
    return rec.upload_id if rec.concat == 'partial' else None

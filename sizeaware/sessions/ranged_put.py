"""The ranged-PUT protocol: ``Content-Range`` on the image's upload URL.

``PUT /v2/images/<id>/file`` (or ``/stage``) with ``Content-Range: bytes
a-b/N`` writes bytes ``a`` to ``b`` of an ``N``-byte image into the
session of that image and target, created by the first such request (the
image must be visible to the caller and ``queued``; an optional
``X-Image-Sha256`` on that request is checked at finalize). Ranges may
come in any order, in parallel, and overlap bytes already held if they
carry the same bytes. While the image is incomplete the answer is 204 with
``Range: bytes=0-99,200-299``, the ranges held; the request that completes
it gets Glance's answer to the whole upload (:mod:`finalize`).

What a request keeps: all of its bytes when its body arrives whole; when
its connection breaks or times out, every byte that arrived (the stream
base's disconnect and timeout outcomes); when its worker is killed, every
byte that reached the spool (the next request claims them from its
journal); nothing beyond its checkpoints when the body is malformed or
conflicts with bytes held. A request that completed the data and died
before Glance had the image leaves the session ``transferring`` with
every byte: sending any range again finalizes it.
"""

import webob

from sizeaware import exceptions
from sizeaware import framing
from sizeaware import headers
from sizeaware import stream
from sizeaware.sessions import downstream
from sizeaware.sessions import finalize
from sizeaware.sessions import ranges
from sizeaware.sessions import spool as spools

RANGE_HEADER = 'Range'


def parse(environ, max_image_size):
    """Check what the headers alone decide, before the body is read.

    :returns: ``(first, last, size, chunked)``.
    """
    first, last, size = headers.content_range(environ)
    if size > max_image_size:
        raise exceptions.ImageTooLarge(
            'Declared image size %d bytes exceeds the maximum of %d bytes.'
            % (size, max_image_size))
    chunked = headers.is_chunked(environ)
    length = None if chunked else headers.content_length(environ)
    if not chunked and length != last - first + 1:
        raise exceptions.ConflictingLength(
            'Content-Length %s does not match the %d bytes of Content-Range.'
            % ('(none)' if length is None else length, last - first + 1))
    declared = headers.image_size(environ)
    if declared is not None and declared != size:
        raise exceptions.ConflictingLength(
            '%s %d does not match the size %d of Content-Range.'
            % (headers.IMAGE_SIZE_HEADER, declared, size))
    return first, last, size, chunked


def open_session(app, spool, environ, image_id, target, size):
    """The caller's session for this image and target, created if none.

    :raises sizeaware.exceptions.ImageNotFound: the caller cannot see the
        image.
    :raises sizeaware.exceptions.SessionNotFound: another caller's upload
        to it is in progress (to them it does not exist).
    :raises sizeaware.exceptions.UploadConflict: the image is not queued,
        or the session is for another size.
    """
    owner = downstream.caller(environ)
    sha256 = headers.image_sha256(environ)
    session = spool.session(image_id, target, owner)
    if session is None:
        image = downstream.get_image(app, environ, image_id)
        if image.get('status') != 'queued':
            raise exceptions.UploadConflict(
                'The image is %s; only a queued image takes an upload.'
                % image.get('status'))
        session = spool.create(image_id, target, owner, size, sha256)
    rec = session.record
    try:
        if rec.size != size:
            raise exceptions.UploadConflict(
                'The upload session of this image is for %d bytes, not %d.'
                % (rec.size, size))
        if sha256 is not None and sha256 != rec.sha256:
            raise exceptions.UploadConflict(
                '%s differs from the one declared when the upload began '
                '(%s).' % (headers.IMAGE_SHA256_HEADER, rec.sha256 or 'none'))
        session.check_writable()
    except exceptions.SizeawareError:
        session.close()
        raise
    return session


def write(app, environ, session, first, last, chunked, through=False):
    """Write the request's body as bytes ``first`` to ``last``.

    :param through: when these bytes complete the image, finalize while
        they arrive (``finalize_while_receiving``).
    :returns: the answer: 204 with the ranges held, or Glance's answer to
        the whole image when this request completed it.
    """
    through = through and session.record.parts is None and (
        ranges.is_complete(ranges.add(session.held(), first, last + 1),
                           session.record.size))
    with session.writer(first, last) as stream_class:
        body = framing.open_body(environ, last - first + 1, chunked,
                                 stream_class)
        try:
            if through:
                return finalize.finalize(
                    app, environ, session, environ['PATH_INFO'],
                    live=spools.Live(first, body, lambda: _complete(
                        session, first, last)))
            while body.read(stream.DEFAULT_READ_SIZE):
                pass
        except (exceptions.ClientDisconnected,
                exceptions.ClientTimeout):
            # The connection broke: what arrived is the client's and is
            # kept; the error still answers (408) or is logged (499).
            if body.received:
                session.commit(first, first + body.received, final=False)
            raise
        finally:
            body.close()
        held, finalizing = session.commit(first, last + 1)
    if finalizing:
        return finalize.finalize(app, environ, session,
                                 environ['PATH_INFO'])
    response = webob.Response(status=204)
    response.headers[RANGE_HEADER] = ranges.header_value(held)
    return response


def _complete(session, first, last):
    """Claim the bytes of a request finalizing while they arrived; they
    complete the image."""
    if not session.commit(first, last + 1)[1]:
        raise exceptions.UploadConflict(
            'The upload of this image is being finished by another '
            'request.')

"""The ranged-PUT protocol: ``Content-Range`` on the image's upload URL.

``PUT /v2/images/<id>/file`` (or ``/stage``) with ``Content-Range: bytes
a-b/N`` writes bytes ``a`` to ``b`` of an ``N``-byte image into the
session of that image and target, created by the first such request (the
image must be visible to the caller and ``queued``; an optional
``X-Image-Sha256`` on that request is checked at finalize). Ranges may
come in any order, in parallel, and overlap bytes already held if they
carry the same bytes. An RFC 9530 ``Content-Digest`` (``sha-512``,
``sha-256`` or ``crc32c``) on a request has its body checked before any
of it counts as held: 400 and nothing kept when it differs (nor when such
a body is cut off). While the image is incomplete the answer is 204 with
``Range: bytes=0-99,200-299``, the ranges held; the request that completes
it gets Glance's answer to the whole upload.

What a request keeps is the receive flow's (:mod:`~sizeaware.sessions.
receive`): every byte that arrived when its body breaks; when its worker
is killed, every byte that reached the spool (the next request claims them
from its journal); nothing beyond its checkpoints when the body is
malformed or conflicts with bytes held.
"""

import webob

from sizeaware import exceptions
from sizeaware import headers
from sizeaware.sessions import ranges
from sizeaware.sessions import receive

RANGE_HEADER = 'Range'


def handle(app, storage, environ, image_id, target, max_image_size,
           through=False):
    """Answer one ranged PUT; a webob response."""
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
    declared_size = headers.image_size(environ)
    if declared_size is not None and declared_size != size:
        raise exceptions.ConflictingLength(
            '%s %d does not match the size %d of Content-Range.'
            % (headers.IMAGE_SIZE_HEADER, declared_size, size))
    declared = headers.content_digest(environ)
    sha256 = headers.image_sha256(environ)
    session, created = receive.open_session(app, storage, environ, image_id,
                                            target, size, sha256=sha256)
    try:
        rec = session.record
        if rec.size != size:
            raise exceptions.UploadConflict(
                'The upload session of this image is for %d bytes, not %d.'
                % (rec.size, size))
        if sha256 is not None and sha256 != rec.sha256:
            raise exceptions.UploadConflict(
                '%s differs from the one declared when the upload began '
                '(%s).' % (headers.IMAGE_SHA256_HEADER, rec.sha256 or 'none'))
        received = receive.receive(
            app, environ, session, first, last, last - first + 1, chunked,
            declared=declared, through=through, image_checked=created)
    finally:
        session.close()
    if received.response is not None:
        return received.response
    response = webob.Response(status=204)
    response.headers[RANGE_HEADER] = ranges.header_value(received.held)
    return response


"""The tus 1.0 protocol at the image's own upload URLs.

``/v2/images/<id>/file`` and ``/v2/images/<id>/stage`` are tus creation
URLs; an upload created there gets its own URL,
``.../file/tus/<upload id>`` (128 random bits), on the same transfer
sessions as the ranged PUT (:mod:`.ranged_put`): an upload of the whole
image is the image's one session for that target, a partial upload
(concatenation) a session of its own. Extensions: creation,
creation-with-upload, expiration, checksum (``sha1``, ``sha256``,
``md5``), termination, concatenation.

``OPTIONS`` on a creation URL
    204 with ``Tus-Version``, ``Tus-Extension``, ``Tus-Max-Size`` (the
    size filter's ``max_image_size``) and ``Tus-Checksum-Algorithm``;
    needs no identity.
``POST`` with ``Tus-Resumable`` and ``Upload-Length``
    201 with ``Location`` (absolute) and ``Upload-Expires`` (an RFC 9110
    date); 413 above ``Tus-Max-Size``; ``Upload-Length: 0`` makes an
    empty image at once; 409 while the image has a session
    for that target already, or is not ``queued``. ``Upload-Metadata`` is
    kept and echoed by ``HEAD``. A body (``Content-Type:
    application/offset+octet-stream``) is written as by ``PATCH``; if that
    fails, the upload is gone with its answer (whose client never learnt
    its URL).
    ``Upload-Concat: partial`` creates a partial upload;
    ``Upload-Concat: final;<url> <url> ...`` joins complete partial
    uploads of the same image and caller, in order, into the image
    (their bytes are linked, not copied) and finalizes it.
``HEAD`` on an upload URL
    ``Upload-Offset``, ``Upload-Length``, ``Upload-Expires``,
    ``Cache-Control: no-store``, and ``Upload-Metadata`` and
    ``Upload-Concat`` when set. A ``PATCH`` still being wound up (its
    client gone) is waited for, up to :data:`IDLE_WAIT` seconds, so the
    offset is what that request finally keeps. An upload holding every
    byte that nobody finalized (the request that completed it died) is
    finalized by the ``HEAD``, whose answer is then Glance's refusal, if
    any.
``PATCH`` with ``Upload-Offset`` and ``Content-Type:
application/offset+octet-stream``
    appends: 204 with the new ``Upload-Offset``, the final one too (after
    Glance took the image; a refusal is Glance's own answer). 409 on
    another offset (or while another request writes), 415 on another
    media type, 413 past ``Upload-Length``, 403 to a final upload, 460
    when ``Upload-Checksum`` does not match (nothing of the request is
    kept). The new offset is what the session holds from byte 0 on, also
    when ranged PUTs filled bytes after this request's. A request cut off
    keeps every byte that arrived (:mod:`~sizeaware.sessions.receive`
    says exactly which), unless it carried a checksum (its bytes cannot be
    verified: none are kept).
``DELETE`` on an upload URL
    204; the URL then answers 404. 409 while another request finalizes
    the upload: its client gets the real verdict.

Every request but ``OPTIONS`` must carry ``Tus-Resumable: 1.0.0`` (412
with ``Tus-Version`` otherwise); the filter puts ``Tus-Resumable`` on every
answer. An upload belongs to the project and user that created it:
anyone else gets 404. The request that completes the data finalizes the
image (:mod:`~sizeaware.sessions.finalize`), whose upload URL then
answers 404.
"""

import base64
import email.utils
import secrets
import urllib.parse

import webob

from sizeaware import digests
from sizeaware import exceptions
from sizeaware import framing
from sizeaware import headers
from sizeaware import routes
from sizeaware.sessions import control
from sizeaware.sessions import downstream
from sizeaware.sessions import finalize
from sizeaware.sessions import receive
from sizeaware.sessions import record as records

VERSION = '1.0.0'
EXTENSIONS = ('creation', 'creation-with-upload', 'expiration', 'checksum',
              'termination', 'concatenation')
#: The checksum algorithms, ``sha1`` first as the extension requires.
CHECKSUMS = ('sha1', 'sha256', 'md5')
MEDIA_TYPE = 'application/offset+octet-stream'
#: The most seconds a HEAD waits for a PATCH still being wound up (the
#: server's socket timeout ends one whose client went quiet sooner).
IDLE_WAIT = 30
#: The longest ``Upload-Metadata`` kept.
METADATA_MAX = 4096
PARTIAL = 'partial'
FINAL = 'final;'


def handle(app, storage, environ, image_id, target, upload_id,
           max_image_size, through=False):
    """Answer one tus request (see the module docstring).

    :returns: a webob response.
    """
    method = environ['REQUEST_METHOD']
    if method == 'OPTIONS':
        return options(max_image_size)
    value = environ.get('HTTP_TUS_RESUMABLE')
    if value is None or value.strip() != VERSION:
        raise exceptions.ProtocolVersionUnsupported(
            'Tus-Resumable %s is not supported; this server speaks tus %s.'
            % ('(none)' if value is None else headers.quote(value), VERSION),
            VERSION)
    if upload_id is None:
        if method != 'POST':
            raise exceptions.MethodNotAllowed(
                'A tus creation URL answers OPTIONS and POST only.')
        return create(app, storage, environ, image_id, target,
                      max_image_size, through)
    if method not in ('HEAD', 'PATCH', 'DELETE'):
        raise exceptions.MethodNotAllowed(
            'A tus upload answers HEAD, PATCH and DELETE only.')
    session = _find(storage, environ, image_id, target, upload_id)
    try:
        if method == 'HEAD':
            return head(app, environ, session)
        if method == 'DELETE':
            session.cancel()
            return webob.Response(status=204)
        return patch(app, environ, session, through)
    finally:
        session.close()


def options(max_image_size):
    response = webob.Response(status=204)
    response.headers.update({
        'Tus-Version': VERSION,
        'Tus-Extension': ','.join(EXTENSIONS),
        'Tus-Max-Size': str(max_image_size),
        'Tus-Checksum-Algorithm': ','.join(CHECKSUMS),
    })
    return response


def head(app, environ, session):
    session.wait_idle(IDLE_WAIT)
    rec = session.refresh()
    held = session.held()
    if (rec.concat != PARTIAL and rec.phase in records.RESUMABLE
            and _offset(held) == rec.size):
        # Every byte is held, yet nobody finalizes: the request that
        # completed them died before or while it finalized (its worker
        # killed), or Glance failed for a reason of its own. A client told
        # this offset sends nothing more, so this request finalizes;
        # Glance's refusal is the answer. Another request finalizing it
        # meanwhile answers for it: this one reports the offset.
        try:
            refusal = control.finalize_now(app, environ, session)
        except exceptions.UploadConflict:
            refusal = None
        if refusal is not None:
            return refusal
    response = webob.Response(status=200)
    response.headers['Upload-Offset'] = str(
        rec.size if session.record.ended else _offset(held))
    response.headers['Upload-Length'] = str(rec.size)
    response.headers['Upload-Expires'] = _date(rec.expires_at)
    if rec.metadata:
        response.headers['Upload-Metadata'] = rec.metadata
    if rec.concat:
        response.headers['Upload-Concat'] = rec.concat
    response.cache_control = 'no-store'
    return response


def patch(app, environ, session, through=False):
    rec = session.record
    if rec.concat and rec.concat.startswith(FINAL):
        raise exceptions.UploadForbidden(
            'A final upload is made of its partial uploads and takes no '
            'bytes of its own.')
    _check_media_type(environ)
    if 'HTTP_UPLOAD_OFFSET' not in environ:
        raise exceptions.MalformedHeader('Upload-Offset is required.')
    offset = headers.parse_byte_count('Upload-Offset',
                                      environ['HTTP_UPLOAD_OFFSET'])
    return _write(app, environ, session, offset, through)


def create(app, storage, environ, image_id, target, max_image_size,
           through=False):
    concat = environ.get('HTTP_UPLOAD_CONCAT')
    if concat is not None and concat.strip().startswith(FINAL):
        return _create_final(app, storage, environ, image_id, target,
                             concat.strip(), max_image_size)
    if concat is not None and concat.strip() != PARTIAL:
        raise exceptions.MalformedHeader(
            'Invalid Upload-Concat header %s: expected "partial" or '
            '"final;<url> <url> ...".' % headers.quote(concat))
    if 'HTTP_UPLOAD_DEFER_LENGTH' in environ:
        raise exceptions.MalformedHeader(
            'Upload-Defer-Length is not supported: give Upload-Length.')
    if 'HTTP_UPLOAD_LENGTH' not in environ:
        raise exceptions.MalformedHeader('Upload-Length is required.')
    size = headers.parse_byte_count('Upload-Length',
                                    environ['HTTP_UPLOAD_LENGTH'])
    _check_size(size, max_image_size)
    metadata = _metadata(environ)
    has_body = headers.is_chunked(environ) or bool(
        headers.content_length(environ))
    if has_body:
        _check_media_type(environ)
        _checksum(environ)
    upload_id = secrets.token_hex(16)
    fields = dict(upload_id=upload_id, metadata=metadata)
    if concat is not None:
        fields.update(part=upload_id, concat=PARTIAL)
    session, created = receive.open_session(app, storage, environ,
                                            image_id, target, size, **fields)
    try:
        _check_new(session, upload_id)
        location = _location(environ, upload_id)
        if has_body:
            try:
                response = _write(app, environ, session, 0, through,
                                  image_checked=created)
            except Exception:
                # The client never learnt the upload's URL: nothing of it
                # is kept, and the image takes a new creation at once.
                session.remove()
                raise
            if response.status_int >= 300:
                # Glance's answer to the whole image: a session that keeps
                # its bytes (Glance's own trouble) is named, for a client
                # to finish it; one that ended goes.
                if session.refresh().ended:
                    session.remove()
                else:
                    response.headers['Location'] = location
                return response
            response.status = 201
        elif size == 0 and concat is None:
            # An empty image is complete as created.
            refusal = control.finalize_now(app, environ, session)
            if refusal is not None:
                return refusal
            response = webob.Response(status=201)
        else:
            response = webob.Response(status=201)
        response.headers['Location'] = location
        response.headers['Upload-Expires'] = _date(session.record.expires_at)
        return response
    finally:
        session.close()


# -- internals ---------------------------------------------------------------


def _write(app, environ, session, offset, through=False,
           image_checked=False):
    """Append the request's body at ``offset``; the answer (204 with the
    new offset, or Glance's refusal of the completed image).

    :param through: when the body completes the upload, finalize while it
        arrives (``finalize_while_receiving``).
    """
    rec = session.record
    checksum = _checksum(environ)
    chunked = headers.is_chunked(environ)
    length = None if chunked else (headers.content_length(environ) or 0)
    if offset >= rec.size or length == 0:
        # The receive flow checks the phase of a request with bytes.
        session.check_writable()
        current = _offset(session.held())
        if current != offset:
            raise _offset_conflict(offset, current)
        if length or (chunked and _has_a_byte(environ)):
            raise exceptions.BeyondUploadLength(
                'The upload already holds all of its %d bytes.' % rec.size)
        return _written(session, current)
    if length is not None and offset + length > rec.size:
        raise exceptions.BeyondUploadLength(
            'Upload-Offset %d plus Content-Length %d goes past the '
            'Upload-Length %d.' % (offset, length, rec.size))

    def at_offset(held):
        current = _offset(held)
        if current != offset:
            raise _offset_conflict(offset, current)
    received = receive.receive(
        app, environ, session, offset, rec.size - 1, length, chunked,
        declared=checksum, limit=rec.size - offset,
        final=rec.concat != PARTIAL, through=through,
        mismatch=exceptions.ChecksumMismatch, before=at_offset,
        image_checked=image_checked)
    if received.response is not None:
        if received.response.status_int >= 300:
            return received.response
        control.discard(received.response)
        return _written(session, rec.size)
    # What the session holds from 0 on: ranged PUTs may have filled the
    # bytes after this request's.
    return _written(session, _offset(received.held))


def _has_a_byte(environ):
    """Whether a chunked body holds any byte."""
    body = framing.open_body(environ, 0, True)
    try:
        body.read(1)
    except exceptions.BodyTooLong:
        return True
    finally:
        body.close()
    return False


def _create_final(app, storage, environ, image_id, target, concat,
                  max_image_size):
    urls = concat[len(FINAL):].split()
    if not urls or len(set(urls)) != len(urls):
        raise exceptions.MalformedHeader(
            'Invalid Upload-Concat header: "final;" must be followed by the '
            'URLs of distinct partial uploads.')
    caller = downstream.caller(environ)
    partials = []
    session = None
    try:
        for url in urls:
            upload = routes.tus_upload(_path_info(environ, url))
            if upload is None or upload[:2] != (image_id, target):
                raise exceptions.MalformedHeader(
                    'Upload-Concat names %s, not a partial upload of this '
                    'image.' % headers.quote(url))
            partial = storage.session(image_id, target, caller,
                                      part=upload[2])
            if partial is None:
                raise exceptions.SessionNotFound(
                    'No partial upload %s.' % headers.quote(url))
            partials.append(partial)
            if partial.record.concat != PARTIAL:
                raise exceptions.MalformedHeader(
                    '%s is not a partial upload.' % headers.quote(url))
            if _offset(partial.held()) != partial.record.size:
                raise exceptions.UploadConflict(
                    'The partial upload %s is not complete.'
                    % headers.quote(url))
        size = sum(partial.record.size for partial in partials)
        if 'HTTP_UPLOAD_LENGTH' in environ and headers.parse_byte_count(
                'Upload-Length', environ['HTTP_UPLOAD_LENGTH']) != size:
            raise exceptions.MalformedHeader(
                'Upload-Length differs from the %d bytes of the partial '
                'uploads.' % size)
        _check_size(size, max_image_size)
        metadata = _metadata(environ)
        receive.check_queued(app, environ, image_id)
        upload_id = secrets.token_hex(16)
        session = storage.create(image_id, target, caller, size,
                                 upload_id=upload_id, metadata=metadata,
                                 concat=FINAL + ' '.join(urls), reserved=True)
        _check_new(session, upload_id)
        try:
            _, finalizing = session.join(partials)
        except exceptions.SizeawareError:
            # A partial upload went meanwhile: no final upload is left
            # behind to stand in the way of the next creation.
            session.remove()
            raise
        for partial in partials:
            partial.remove()
        response = webob.Response(status=201)
        if finalizing:
            answer = finalize.finalize(app, environ, session)
            if answer.status_int >= 300:
                if not session.refresh().ended:
                    # Kept (Glance's own trouble): the client finishes it
                    # at its URL later.
                    answer.headers['Location'] = _location(environ,
                                                           upload_id)
                return answer
            control.discard(answer)
        response.headers['Location'] = _location(environ, upload_id)
        response.headers['Upload-Expires'] = _date(session.record.expires_at)
        return response
    finally:
        for partial in partials:
            partial.close()
        if session is not None:
            session.close()


def _find(storage, environ, image_id, target, upload_id):
    """The caller's upload of that id: a partial upload's own session, or
    the image's session if the upload is that."""
    caller = downstream.caller(environ)
    session = storage.session(image_id, target, caller, part=upload_id)
    if session is None:
        try:
            session = storage.session(image_id, target, caller)
        except exceptions.SessionNotFound:
            session = None
        if session is not None and session.record.upload_id != upload_id:
            session.close()
            session = None
    if session is None:
        raise exceptions.SessionNotFound('No such upload.')
    return session


def _check_new(session, upload_id):
    if session.record.upload_id != upload_id:
        phase = session.record.phase
        raise exceptions.UploadConflict(
            'This image already has an upload in progress (%s) for this '
            'target; resume that one, or cancel it with DELETE on its URL '
            'or on the "session" URL under this one.' % phase)


def _check_size(size, max_image_size):
    if size > max_image_size:
        raise exceptions.ImageTooLarge(
            'Upload-Length %d bytes exceeds the maximum of %d bytes '
            '(Tus-Max-Size).' % (size, max_image_size))


def _check_media_type(environ):
    value = environ.get('CONTENT_TYPE', '')
    if value.split(';')[0].strip().lower() != MEDIA_TYPE:
        raise exceptions.UnsupportedMediaType(
            'Content-Type %s: a tus body is %s.'
            % (headers.quote(value), MEDIA_TYPE))


def _checksum(environ):
    """``(algorithm, digest)`` of ``Upload-Checksum``, or None."""
    value = environ.get('HTTP_UPLOAD_CHECKSUM')
    if value is None:
        return None
    parts = value.strip().split(' ')
    if len(parts) != 2:
        raise exceptions.MalformedHeader(
            'Invalid Upload-Checksum header %s: expected "<algorithm> '
            '<base64 digest>".' % headers.quote(value))
    if parts[0] not in CHECKSUMS:
        raise exceptions.MalformedHeader(
            'Unsupported checksum algorithm %s; supported: %s.'
            % (headers.quote(parts[0]), ', '.join(CHECKSUMS)))
    try:
        digest = base64.b64decode(parts[1], validate=True)
    except ValueError:
        digest = None
    if digest is None or len(digest) != digests.new(parts[0]).digest_size:
        raise exceptions.MalformedHeader(
            'Invalid Upload-Checksum header %s: not a base64 %s digest.'
            % (headers.quote(value), parts[0]))
    return parts[0], digest


def _metadata(environ):
    value = environ.get('HTTP_UPLOAD_METADATA', '').strip()
    if len(value) > METADATA_MAX or not (value.isascii()
                                         and value.isprintable()):
        raise exceptions.MalformedHeader(
            'Upload-Metadata must be printable ASCII of at most %d '
            'characters.' % METADATA_MAX)
    return value or None


def _offset(held):
    """The tus offset of the ranges held: the bytes held from 0 on."""
    held = list(held)
    return held[0][1] if held and held[0][0] == 0 else 0


def _offset_conflict(offset, current):
    return exceptions.UploadConflict(
        'Upload-Offset %d differs from the upload\'s offset %d.'
        % (offset, current))


def _written(session, offset):
    response = webob.Response(status=204)
    response.headers['Upload-Offset'] = str(offset)
    response.headers['Upload-Expires'] = _date(session.record.expires_at)
    return response


def _location(environ, upload_id):
    """The upload's absolute URL, under the URL the creation went to."""
    request = webob.Request(environ)
    return '%s/tus/%s' % (request.path_url.rstrip('/'), upload_id)


def _path_info(environ, url):
    """The ``PATH_INFO`` that ``url`` (absolute, or a path) names."""
    path = urllib.parse.urlsplit(url).path
    script = environ.get('SCRIPT_NAME', '').rstrip('/')
    if script and path.startswith(script + '/'):
        path = path[len(script):]
    return path


def _date(timestamp):
    """``timestamp`` as an HTTP date (RFC 9110 section 5.6.7)."""
    return email.utils.formatdate(timestamp, usegmt=True)

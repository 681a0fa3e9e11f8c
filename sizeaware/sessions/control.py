"""A session's own URL: its status document and its actions, as oVirt's
``ImageTransferService`` has them.

``GET .../file/session`` (or ``.../stage/session``)
    the status document, also for the retention time after the session
    ended (its owner only; anyone else gets 404);
``POST .../session`` or ``.../session/extend``
    extends the session, answers the document;
``POST .../session/pause``
    ``paused_user``: writes are refused with 409 until it is resumed (a
    write in progress keeps what it sends);
``POST .../session/resume``
    back to taking bytes;
``POST .../session/finalize``
    finalize now: 409 listing the missing ranges if any; otherwise the
    verdict: the document with ``finished_success``, or the refusal;
``DELETE .../session``
    cancels (``cancelled_user``): 204; 409 while another request is
    finalizing it.
"""

import json
import time

import webob

from sizeaware import exceptions
from sizeaware.sessions import downstream
from sizeaware.sessions import finalize
from sizeaware.sessions import ranges
from sizeaware.sessions import record as records
from sizeaware.sessions.storage import ledger

ACTIONS = ('extend', 'pause', 'resume', 'finalize')
PIECE_DIGEST = 'crc32c'


def status(session):
    """The status document of ``session`` (refreshed)."""
    rec = session.refresh()
    pieces = session.pieces()
    held = []
    for start, end, _ in pieces:
        held = ranges.add(held, start, end)
    phase = rec.phase
    if phase == records.TRANSFERRING and not session.writing():
        phase = records.PAUSED_SYSTEM
    return {
        'image_id': rec.image_id, 'target': rec.target,
        'phase': phase, 'size': rec.size,
        'bytes_held': ranges.total(held),
        'ranges_held': [[s, e - 1] for s, e in held],
        'piece_digest': PIECE_DIGEST,
        'pieces': [[s, e - 1, '%08x' % crc] for s, e, crc in pieces],
        'created_at': _iso(rec.created_at),
        'updated_at': _iso(rec.updated_at),
        'expires_at': None if rec.ended else _iso(rec.expires_at),
        'phases': [[name, _iso(when)] for name, when in rec.phases],
        'error': rec.error, 'sha256': rec.sha256,
        # Where ranges must start for a session whose bytes go up to S3
        # as parts (None elsewhere: any range).
        'part_size': rec.part_size,
    }


def handle(app, storage, environ, image_id, target, action):
    """Answer a request to a session's URL; a webob response."""
    method = environ['REQUEST_METHOD']
    if action is None and method not in ('GET', 'HEAD', 'POST', 'DELETE'):
        raise exceptions.MethodNotAllowed(
            'A transfer session answers GET, POST (extend) and DELETE '
            'only.')
    if action is not None and method != 'POST':
        raise exceptions.MethodNotAllowed(
            'A transfer session\'s %s answers POST only.' % action)
    session = storage.session(image_id, target, downstream.caller(environ),
                              ended=method in ('GET', 'HEAD'))
    if session is None:
        raise exceptions.SessionNotFound('No upload session for this image.')
    try:
        if method == 'DELETE':
            session.cancel()
            return webob.Response(status=204)
        if action == 'pause':
            session.set_phase(records.PAUSED_USER, expect=records.LIVE[:3])
        elif action == 'resume':
            session.set_phase(records.TRANSFERRING, expect=records.LIVE[:3])
        elif action == 'finalize':
            answer = finalize_now(app, environ, session)
            if answer is not None:
                return answer
        elif method == 'POST' or not session.record.ended:
            session.touch()
        return document(session)
    finally:
        session.close()


def finalize_now(app, environ, session):
    """Finalize a session that holds every byte.

    :returns: Glance's answer when it refused the image, else None (the
        status document follows).
    :raises sizeaware.exceptions.UploadConflict: bytes are missing, or the
        phase does not allow it.
    """
    rec = session.refresh()
    missing = missing_ranges(session.held(), rec.size)
    if missing:
        raise exceptions.UploadConflict(
            'The upload is not complete: bytes %s are missing.' % ', '.join(
                '%d-%d' % (s, e - 1) for s, e in missing))
    if rec.phase not in records.RESUMABLE:
        raise ledger.phase_conflict(rec)
    _, finalizing = session.commit(rec.size, rec.size)
    if not finalizing:
        raise exceptions.UploadConflict(
            'The upload of this image is being finished by another '
            'request.')
    response = finalize.finalize(app, environ, session)
    if response.status_int >= 300:
        return response
    discard(response)
    return None


def missing_ranges(held, size):
    """The ranges of a ``size``-byte image that ``held`` lacks."""
    missing, position = [], 0
    for start, end in held:
        if start > position:
            missing.append((position, start))
        position = max(position, end)
    if position < size:
        missing.append((position, size))
    return missing


def document(session):
    response = webob.Response(
        (json.dumps(status(session), indent=1) + '\n').encode(),
        content_type='application/json', charset=None)
    response.cache_control = 'no-store'
    return response


def discard(response):
    """Read and close Glance's answer, replaced by the filter's own."""
    app_iter = response.app_iter
    try:
        for _ in app_iter:
            pass
    finally:
        close = getattr(app_iter, 'close', None)
        if close is not None:
            close()


def _iso(timestamp):
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(timestamp))

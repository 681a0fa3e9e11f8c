"""Turning a complete session into an image: the same for every protocol.

Runs in the request that completed the data (or asked to finalize), so its
client gets the verdict: the image is asked for again with that request's
credentials (a session can outlive the token that created it) and must
still be ``queued``; then the session's bytes go into Glance as one
ordinary upload with its size declared, through the size filter, read once
through the stream base and judged on the way (:mod:`checks`: a refused
image is refused in place of its last byte).

How it ends, by whose fault:

* the data's (the checks of :mod:`checks` refuse it: format, declared
  sha256, qcow2 backing file or external data file): ``finished_failure``
  with the reason; the image stays ``queued``, nothing reaches the store,
  the session's bytes go. The data is judged here, before Glance has it,
  so an answer of Glance's is never taken for a refusal of the data;
* nobody's (Glance or its store unavailable or full, any answer of
  Glance's but success while the image is still ``queued``: a 5xx, a 413
  for a full store or a quota, a 400 for a ``disk_format`` not set yet, an
  expired token; a worker killed meanwhile): every byte is kept, the
  phase goes back to ``paused_system`` with ``error`` set, and finalizing
  again (``POST .../session/finalize``, any range sent again, a tus
  ``HEAD``) completes the image without a byte sent again;
* the image's: it was deleted (``cancelled_system``), or is no longer
  ``queued`` (``finished_failure``: the session can never complete);
* success: ``finished_success``, and the session's bytes go.

A store-native session's bytes are in the store already
(:mod:`~sizeaware.sessions.storage.in_store`): its finalize reads none of
them through Glance. The checks run on the data as stored (its size; its
first bytes for the format and its safety checks; the whole of it only
for a declared sha256), then its location is handed to Glance
(:mod:`~sizeaware.sessions.locations`) and the answer waits for the image
to turn ``active``. The same verdicts hold: a refusal of the data ends it
as ``finished_failure`` and removes the bytes from the store; Glance
unreachable, refusing the location, or slow keeps every byte in
``paused_system``. Once the location may have reached Glance the bytes are
never removed by the session again: they are the image's.
"""

from oslo_utils import excutils
import webob

from sizeaware import exceptions
from sizeaware.sessions import checks
from sizeaware.sessions import downstream
from sizeaware.sessions import locations
from sizeaware.sessions import record as records


def upload_path(rec):
    """The upload URL a session's image goes to."""
    return '/v2/images/%s/%s' % (rec.image_id, rec.target)


def finalize(app, environ, session, live=None):
    """Hand the session's image to Glance.

    :param live: a :class:`~sizeaware.sessions.receive.Live` when the
        request's own bytes are still arriving; its ``ended`` must move the
        session to ``finalizing``.

    :returns: Glance's answer to the upload, a webob response.
    :raises sizeaware.exceptions.SizeawareError: a check failed.
    :raises downstream.GlanceAnswer: Glance refused to show the image.
    """
    rec = session.record
    if rec.location is not None:
        return _by_location(app, environ, session)
    image = _still_queued(app, environ, session)
    try:
        reader = checks.CheckedImage(session, image.get('disk_format'),
                                     live)
    except exceptions.ImageRefused as refusal:
        # An empty image is judged at once.
        session.end(records.FINISHED_FAILURE, str(refusal))
        raise
    try:
        response = downstream.put_image(app, environ, upload_path(rec),
                                        reader, rec.size)
    except Exception as exc:
        if reader.refusal is None and (live is None or live.error is None):
            with excutils.save_and_reraise_exception():
                _keep(session, 'Glance failed to store the image: %r.'
                      % (exc,))
        # Our refusal, raised inside Glance's read of the image (Glance
        # hands it back, or answers 500 with it in its log): the image was
        # refused, whatever Glance made of it.
        response = None
    finally:
        reader.close()
    if live is not None and live.error is not None:
        # The request's own failure (its body broke, or its bytes were
        # refused) before it claimed them: the session never moved to
        # finalizing, and keeps what arrived.
        raise live.error
    if reader.refusal is not None:
        session.end(records.FINISHED_FAILURE, str(reader.refusal))
        raise reader.refusal
    if response.status_int < 300 and reader.received == rec.size:
        session.end(records.FINISHED_SUCCESS)
        return response
    reason = 'Glance answered %s: %s' % (response.status, _text(response))
    try:
        # Whose fault: the image's state decides, as Glance has it now.
        _still_queued(app, environ, session, reason + ' ')
    except (exceptions.SizeawareError, downstream.GlanceAnswer):
        pass
    else:
        _keep(session, reason)
    return response


def _by_location(app, environ, session):
    """Finalize a store-native session: check, hand over, wait."""
    rec = session.record
    glance = session.storage.in_store.locations
    image = _image(app, environ, session)
    if image.get('status') == 'active' and rec.handed_over:
        # A finalize whose answer was lost (its worker killed, or Glance
        # slow): the location was taken.
        session.end(records.FINISHED_SUCCESS)
        return webob.Response(status=204)
    if image.get('status') != 'queued':
        error = exceptions.UploadConflict(
            'The image is %s, no longer queued: the upload cannot be '
            'finished.' % image.get('status'))
        session.end(records.FINISHED_FAILURE, str(error))
        raise error
    if 'os_glance_import_task' in image and not rec.handed_over:
        error = exceptions.UploadConflict(
            'Another operation on the image is in progress; finalize '
            'again once it has ended.')
        _keep(session, str(error))
        raise error
    if 'os_glance_import_task' not in image:
        if not rec.handed_over:
            try:
                session.assemble()
            except exceptions.CommitFailed as error:
                _keep(session, str(error))
                raise
            try:
                checks.judge_stored(session, image.get('disk_format'))
            except exceptions.ImageRefused as refusal:
                session.end(records.FINISHED_FAILURE, str(refusal))
                raise
            session.hand_over()
        try:
            # Every time: a finalize killed midway left it half done.
            session.seal()
        except exceptions.CommitFailed as error:
            _keep(session, str(error))
            raise
        try:
            status, text = glance.add(environ, rec.image_id,
                                      rec.location)
        except exceptions.GlanceUnreachable as exc:
            _keep(session, str(exc))
            raise
        if status >= 300:
            if status in _REFUSED:
                # Glance did not take it, for sure: the bytes are the
                # session's again. (Any other answer may come from a proxy
                # or another operation holding the image; they stay the
                # image's until Glance says.)
                session.hand_over(False)
            error = exceptions.CommitFailed(
                'Glance refused the image\'s location (%d: %s).' % (
                    status, _text_of(text)))
            _keep(session, str(error))
            raise error
    taken, image = locations.wait_active(
        lambda: _image(app, environ, session), glance.timeout)
    if taken:
        session.end(records.FINISHED_SUCCESS)
        return webob.Response(status=204)
    if taken is False:
        session.hand_over(False)
        error = exceptions.CommitFailed(
            'Glance did not make the image active from its location (it '
            'is queued again); its log names the reason.')
    else:
        error = exceptions.CommitFailed(
            'Glance has not made the image active in %d s; finalize again '
            'to see whether it did.' % glance.timeout)
    _keep(session, str(error))
    raise error


#: Glance's answers to a location that it certainly did not take.
_REFUSED = (400, 403, 404)


def _image(app, environ, session):
    """The session's image; the session ends (or is kept) as
    :func:`_still_queued` says when Glance will not show it."""
    try:
        return downstream.get_image(app, environ, session.record.image_id)
    except exceptions.ImageNotFound:
        session.end(records.CANCELLED_SYSTEM, 'The image was deleted.')
        raise
    except downstream.GlanceAnswer as answer:
        _keep(session, 'Glance answered %s when asked for the image.'
              % answer.response.status)
        raise


def _still_queued(app, environ, session, before=''):
    """The session's image, which must still be ``queued``; else the
    session ends (``cancelled_system`` for an image that is gone,
    ``finished_failure`` for one that is no longer ``queued``), or is kept
    when Glance cannot say."""
    try:
        image = downstream.get_image(app, environ, session.record.image_id)
    except exceptions.ImageNotFound:
        session.end(records.CANCELLED_SYSTEM,
                    before + 'The image was deleted.')
        raise
    except downstream.GlanceAnswer as answer:
        _keep(session, before + 'Glance answered %s when asked for the '
              'image.' % answer.response.status)
        raise
    if image.get('status') != 'queued':
        error = exceptions.UploadConflict(
            '%sThe image is %s, no longer queued: the upload cannot be '
            'finished.' % (before, image.get('status')))
        session.end(records.FINISHED_FAILURE, str(error))
        raise error
    return image


def _keep(session, reason):
    session.set_phase(records.PAUSED_SYSTEM, reason + ' Every byte is '
                      'kept: finalize again to finish the upload.')


def _text(response):
    return _text_of(response.text)


def _text_of(text):
    return ' '.join(text[:300].split())

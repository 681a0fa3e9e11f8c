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
"""

from oslo_utils import excutils

from sizeaware import exceptions
from sizeaware.sessions import checks
from sizeaware.sessions import downstream
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
    return ' '.join(response.text[:300].split())

"""Turning a complete session into an image: the same for every protocol.

Runs in the request that completed the data, so its client gets the
verdict: the image is asked for again with that request's credentials (a
session can outlive the token that created it) and must still be
``queued``; then the spool goes into Glance as one ordinary upload with its
size declared, through the size filter, read once through the stream base
and judged on the way (:mod:`verify`: a refused image is refused in place
of its last byte). Any failure leaves the image ``queued`` with nothing
stored, and the session ``failed`` with the reason; success removes the
spool.
"""

from oslo_utils import excutils

from sizeaware import exceptions
from sizeaware.sessions import downstream
from sizeaware.sessions import record as records
from sizeaware.sessions import verify


def finalize(app, environ, session, path, live=None):
    """Hand the session's image to Glance at ``path`` (the upload URL).

    :param live: a :class:`~sizeaware.sessions.spool.Live` when the
        request's own bytes are still arriving; its ``ended`` must move the
        session to ``finalizing``.

    :returns: Glance's answer to the upload, a webob response.
    :raises sizeaware.exceptions.SizeawareError: a check failed.
    :raises downstream.GlanceAnswer: Glance refused to show the image.
    """
    rec = session.record
    try:
        image = downstream.get_image(app, environ, rec.image_id)
        if image.get('status') != 'queued':
            raise exceptions.UploadConflict(
                'The image is %s, no longer queued: the upload cannot be '
                'finished.' % image.get('status'))
        reader = verify.CheckedImage(session, image.get('disk_format'),
                                     live)
    except exceptions.SizeawareError as error:
        session.fail(str(error))
        raise
    except downstream.GlanceAnswer as answer:
        session.fail('Glance answered %s when asked for the image.'
                     % answer.response.status)
        raise
    try:
        response = downstream.put_image(app, environ, path, reader, rec.size)
    except Exception as exc:
        if reader.refusal is None and (live is None or live.error is None):
            with excutils.save_and_reraise_exception():
                session.fail('Glance failed to store the image: %r' % (exc,))
        # Our refusal, raised inside Glance's read of the image (Glance
        # hands it back, or answers 500 with it in its log): the image was
        # refused, whatever Glance made of it.
        response = None
    finally:
        reader.close()
    if live is not None and live.error is not None:
        # The request's own failure (its body broke, or its bytes were
        # refused): Glance's upload failed with it; the caller keeps what
        # arrived.
        raise live.error
    if reader.refusal is not None:
        session.fail(str(reader.refusal))
        raise reader.refusal
    if response.status_int < 300 and reader.received == rec.size:
        session.set_phase(records.FINISHED)
        session.remove()
    else:
        session.fail('Glance answered %s: %s' % (
            response.status, response.text[:300].strip()))
    return response

"""Resumable image uploads: transfer sessions and ranged PUT.

A multi-gigabyte upload to Glance that breaks at 90 % starts again from
byte 0. This filter keeps partial uploads in a spool on the API node and,
once an image is complete, hands it to Glance as one ordinary upload with
its size declared (through the size filter, which sits after this one),
under the credentials of the request that completed it, so Glance's own
checks and the store's known-size path still apply. The sessions live in
:mod:`sizeaware.sessions`; this module only routes requests to them and
answers.

Requests it acts on (any ``/v2.N/``):

``PUT .../file`` or ``.../stage`` with ``Content-Range: bytes a-b/N``
    writes bytes ``a`` to ``b`` of the ``N``-byte image
    (:mod:`sizeaware.sessions.ranged_put`): 204 with ``Range:
    bytes=...`` (the ranges held) while incomplete, Glance's answer to the
    whole upload once complete. ``X-Image-Sha256`` on the first request
    has the whole image's sha256 checked before it reaches Glance.
``GET .../file/session`` or ``.../stage/session``
    the session's status document, JSON: ``image_id``, ``target``,
    ``phase`` (oVirt's ``ImageTransferPhase`` names: ``transferring``,
    ``paused_system``, ``paused_user``, ``finalizing``,
    ``finished_success``, ``finished_failure``, ``cancelled_user``,
    ``cancelled_system``), ``size``, ``bytes_held``, ``ranges_held``
    (``[first, last]`` pairs, last inclusive), ``pieces`` (``[first, last,
    crc32c]``: every claim with its CRC-32C, so a client checks what is
    held against its file), ``piece_digest``, ``created_at``,
    ``updated_at``, ``expires_at``, ``phases`` (each phase change and its
    time), ``error``, ``sha256``. Kept for its owner for
    ``session_retention`` after the session ended.
``POST`` on the same URL, or on ``.../session/extend``
    extends the session (as every request of its owner does) and answers
    its status document.
``POST .../session/pause``, ``.../resume``, ``.../finalize``
    pause (writes answer 409 until resumed), resume, finalize now (409
    with the missing ranges if any, else the verdict)
    (:mod:`sizeaware.sessions.control`).
``DELETE`` on the same URL
    cancels the session and removes its data: 204; 409 while another
    request finalizes it.
tus 1.0 (``Tus-Resumable``)
    ``OPTIONS`` and ``POST`` on the upload URL create an upload at
    ``.../file/tus/<upload id>``, where ``HEAD``, ``PATCH`` and ``DELETE``
    act on it; the same sessions (:mod:`sizeaware.sessions.tus` describes
    every answer).

A session belongs to the project and user that created it; anyone else
gets 404 from its URL and for a range written to its image, as if it did
not exist, and the session is left as it is. Every other request passes
through after one path check.

Deploy it in every pipeline of ``glance-api-paste.ini`` after ``context``
(or ``unauthenticated-context``) and before ``sizeaware``::

    [filter:resumable]
    use = egg:sizeaware#resumable

It needs no option; those it reads (``spool_dir``, ``spool_max_bytes``,
``max_sessions_per_project``, ``session_inactivity_timeout``,
``session_max_age``, ``session_retention``, ``finalize_while_receiving``
and the size filter's ``max_image_size``) are documented once, in
``etc/sizeaware.conf.sample``.

tus clients may ask what the server supports with ``OPTIONS``, which the
protocol wants answered without credentials; behind keystone, ``authtoken``
answers 401 before this filter sees it. :class:`TusDiscovery`
(``egg:sizeaware#tus_discovery``), placed before ``authtoken`` in the
keystone pipelines, answers those ``OPTIONS`` and passes every other
request on untouched.
"""


from oslo_log import log as logging
from oslo_middleware import base

from sizeaware import exceptions
from sizeaware import headers
from sizeaware import opts
from sizeaware import refusals
from sizeaware import routes
from sizeaware.sessions import control
from sizeaware.sessions import downstream
from sizeaware.sessions import limits
from sizeaware.sessions import locations
from sizeaware.sessions import reaper
from sizeaware.sessions.protocols import ranged_put
from sizeaware.sessions.protocols import tus
from sizeaware.sessions.storage import in_store
from sizeaware.sessions.storage import routed
from sizeaware.sessions.storage import spool as spools

LOG = logging.getLogger(__name__)


class ResumableFilter(base.ConfigurableMiddleware):
    """The paste filter; see the module docstring."""

    def __init__(self, application, conf=None):
        super().__init__(application, conf)
        self.oslo_conf.register_opts(opts.size_filter_opts, group=opts.GROUP)
        self.oslo_conf.register_opts(opts.resumable_opts, group=opts.GROUP)
        self.oslo_conf.register_opts(opts.in_store_opts, group=opts.GROUP)
        self.max_image_size = opts.option_value(
            self, opts.size_filter_opts, 'max_image_size')

        def option(name):
            return opts.option_value(
                self, opts.resumable_opts + opts.in_store_opts, name)
        self.storage = routed.Routed(spools.Spool(
            option('spool_dir'), limits.Limits(
                max_sessions_per_project=option('max_sessions_per_project'),
                max_bytes=option('spool_max_bytes'),
                inactivity_timeout=option('session_inactivity_timeout'),
                max_age=option('session_max_age'),
                retention=option('session_retention'))),
            in_store.InStore(self.oslo_conf, locations.Locations(
                self.oslo_conf, option('glance_url'),
                option('commit_timeout')))
            if option('session_storage') == 'store' else None)
        self.through = option('finalize_while_receiving')

    def __call__(self, environ, start_response):
        upload = routes.upload_target(environ)
        tus_upload = routes.tus_target(environ)
        if tus_upload is not None:
            target, handle = tus_upload, self._tus
            start_response = _with_tus_resumable(start_response)
        elif upload is not None and headers.has_content_range(environ):
            target, handle = upload, self._ranged_put
        else:
            target, handle = routes.session_target(environ), self._session
            if target is None:
                return self.application(environ, start_response)
        named = refusals.request_id(environ) is not None
        try:
            response = handle(environ, *target)
        except exceptions.SizeawareError as error:
            response = refusals.refuse(
                LOG, environ, error, named=named, what='resumable upload',
                fields=[('image_id', headers.quote(target[0])),
                        ('target', target[1]),
                        ('method', headers.quote(environ['REQUEST_METHOD'])),
                        ('range', headers.quote(
                            environ.get('HTTP_CONTENT_RANGE', '-')))])
        except downstream.GlanceAnswer as answer:
            response = answer.response
        if isinstance(response, downstream.Passed):
            # Glance's own answer, handed on untouched (webob would drop
            # the body of a 204 without closing what it came from).
            start_response(response.status, response.headerlist)
            return response.app_iter
        return response(environ, start_response)

    def _tus(self, environ, image_id, target, upload_id):
        if environ['REQUEST_METHOD'] != 'OPTIONS':
            self._reap(environ)
        return tus.handle(self.application, self.storage, environ, image_id,
                          target, upload_id, self.max_image_size,
                          self.through)

    def _ranged_put(self, environ, image_id, target):
        self._reap(environ)
        return ranged_put.handle(self.application, self.storage, environ,
                                 image_id, target, self.max_image_size,
                                 self.through)

    def _session(self, environ, image_id, target, action):
        self._reap(environ)
        return control.handle(self.application, self.storage, environ,
                              image_id, target, action)

    def _reap(self, environ):
        reaper.reap(self.storage, downstream.caller(environ))


class TusDiscovery(base.ConfigurableMiddleware):
    """The tus ``OPTIONS`` answer, before authentication; see the module
    docstring."""

    def __init__(self, application, conf=None):
        super().__init__(application, conf)
        self.oslo_conf.register_opts(opts.size_filter_opts, group=opts.GROUP)
        self.max_image_size = opts.option_value(
            self, opts.size_filter_opts, 'max_image_size')

    def __call__(self, environ, start_response):
        if (environ.get('REQUEST_METHOD') != 'OPTIONS'
                or routes.tus_target(environ) is None):
            return self.application(environ, start_response)
        return tus.options(self.max_image_size)(
            environ, _with_tus_resumable(start_response))


def _with_tus_resumable(start_response):
    """``start_response`` putting ``Tus-Resumable`` on every tus answer,
    refusals and Glance's own answers included."""
    def start(status, headerlist, exc_info=None):
        if not any(name.lower() == 'tus-resumable' for name, _ in headerlist):
            headerlist = list(headerlist) + [('Tus-Resumable', tus.VERSION)]
        return start_response(status, headerlist, exc_info)
    return start

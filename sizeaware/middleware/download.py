"""Image downloads as a well-behaved HTTP resource: validators, ranges,
verification.

Glance streams an image's data with neither an ``ETag`` nor
``Accept-Ranges``, answers several RFC 9110 range cases its own way (400
for several ranges, 416 without ``Content-Range`` or for a range it should
ignore, the whole image for ``bytes=-0``), ignores ``If-Range``,
``If-Match`` and ``If-None-Match``, and puts the whole image's
``Content-MD5`` on a 206. No standard client can then resume a download
safely. This filter, on ``GET /v2/images/{image_id}/file`` (any
``/v2.N/``):

* asks Glance for the image's record under the caller's own credentials
  (:func:`sizeaware.subrequests.get_image`); a download of an image the
  caller cannot see, or one that is not ``active``, goes to Glance as it
  came and gets Glance's answer;
* decides the request's conditions and range from the record
  (:mod:`sizeaware.validators` says how) before Glance sees it: 412 and
  416 (with ``Content-Range: bytes */N``) are its own refusals, logged in
  one line with the request id; 304 is its own answer; a range that is
  not to be honoured is removed, so Glance sends the whole image; one that
  is goes to Glance in plain form;
* on Glance's 200 and 206 sets a strong ``ETag`` (the image's
  ``os_hash_value``, else its ``checksum``) and ``Accept-Ranges`` (``bytes``
  when the image's store reads at an offset, see ``ranged_store_types``,
  else ``none``), and removes ``Content-MD5`` from a 206;
* with ``verify_download``, checks a 200's bytes against the image's
  checksum as they stream out and breaks the connection before the last
  byte on a mismatch (:mod:`sizeaware.verified`).

A ``Content-Range`` header on a download is dropped: it describes no body
of a GET, and Glance would take it for a ``Range``. ``HEAD`` is left to
Glance (405).

Deploy it in every pipeline of ``glance-api-paste.ini`` after ``context``
(or ``unauthenticated-context``), so that its question about the image is
asked with the caller's credentials, and before ``cache`` and
``rootapp``, so that a download served from Glance's image cache is
treated alike; ``etc/api-paste.ini`` puts it right after ``sizeaware``,
next to Glance, so that the question passes no other filter of ours::

    [filter:download]
    use = egg:sizeaware#download

Its options (``verify_download``, ``ranged_store_types``) are documented
once, in ``etc/sizeaware.conf.sample``; like every option of sizeaware
they may also be set in this section.
"""

from oslo_config import cfg
from oslo_log import log as logging
from oslo_middleware import base
import webob

from sizeaware import backends
from sizeaware import exceptions
from sizeaware import headers
from sizeaware import opts
from sizeaware import refusals
from sizeaware import routes
from sizeaware import subrequests
from sizeaware import validators
from sizeaware import verified

LOG = logging.getLogger(__name__)

_ANSWERED = ('200', '206')
# Headers the filter sets on Glance's answer, whatever Glance sent.
_REPLACED = frozenset(('etag', 'accept-ranges'))


class DownloadFilter(base.ConfigurableMiddleware):
    """The paste filter; see the module docstring."""

    def __init__(self, application, conf=None):
        super().__init__(application, conf)
        self.oslo_conf.register_opts(opts.download_filter_opts,
                                     group=opts.GROUP)

        def option(name):
            return opts.option_value(self, opts.download_filter_opts, name)
        self.verify = option('verify_download')
        self.ranged_store_types = frozenset(option('ranged_store_types'))
        self.backend_types = backends.types(self.oslo_conf)
        self.default_store = _default_store(self.oslo_conf)
        #: How a backend's store is found (glance_store's own lookup).
        self.find_store = backends.find_store
        # Backend name -> whether its store reads at an offset, asked of
        # glance_store once per process.
        self._reads_at_offset = {}

    def __call__(self, environ, start_response):
        image_id = routes.download_target(environ)
        if image_id is None:
            return self.application(environ, start_response)
        # A GET has no body for a Content-Range to describe; Glance would
        # serve it as a Range.
        environ.pop('HTTP_CONTENT_RANGE', None)
        try:
            image = subrequests.get_image(self.application, environ,
                                          image_id)
        except (exceptions.ImageNotFound, subrequests.GlanceAnswer):
            # Glance's own answer to the download, whatever it is.
            return self.application(environ, start_response)
        representation = validators.Representation.of(
            image, self.ranged(image))
        if representation is None:
            return self.application(environ, start_response)
        named = refusals.request_id(environ) is not None
        try:
            plan = validators.plan(environ, representation)
        except exceptions.SizeawareError as error:
            response = refusals.refuse(
                LOG, environ, error, named=named, what='image download',
                fields=_fields(environ, image_id))
            _describe(response.headers, representation)
            return response(environ, start_response)
        if plan.status == 304:
            response = webob.Response(status=304)
            del response.content_type
            _describe(response.headers, representation)
            return response(environ, start_response)
        environ.pop('HTTP_IF_RANGE', None)
        if plan.span is None:
            environ.pop('HTTP_RANGE', None)
        else:
            environ['HTTP_RANGE'] = validators.range_header(plan.span)
        return self._forward(environ, start_response, image_id,
                             representation, plan)

    def ranged(self, image):
        """Whether every backend holding ``image`` reads at an offset."""
        stores = image.get('stores')
        if isinstance(stores, str) and stores.strip():
            names = [name.strip() for name in stores.split(',')
                     if name.strip()]
        else:
            names = [self.default_store]
        return all(name is not None and self.reads_at_offset(name)
                   for name in names)

    def reads_at_offset(self, name):
        """Whether backend ``name`` reads at an offset: by
        ``ranged_store_types`` when set, else as glance_store declares."""
        if self.ranged_store_types:
            return (name in self.ranged_store_types
                    or self.backend_types.get(name) in self.ranged_store_types)
        known = self._reads_at_offset.get(name)
        if known is None:
            try:
                known = backends.reads_at_offset(self.find_store(
                    name, multi=bool(self.backend_types)))
            except Exception as exc:
                # Not a store glance_store knows here: no ranges, as
                # Glance would answer 400 to one.
                LOG.warning('The download filter cannot tell whether '
                            'backend %s reads at an offset (%r): its images '
                            'are served whole.', headers.quote(name), exc)
                known = False
            self._reads_at_offset[name] = known
        return known

    def _forward(self, environ, start_response, image_id, representation,
                 plan):
        started = []

        def start(status, headerlist, exc_info=None):
            code = status[:3]
            if code in _ANSWERED:
                drop = _REPLACED | ({'content-md5'} if code == '206'
                                    else frozenset())
                headerlist = [(name, value) for name, value in headerlist
                              if name.lower() not in drop]
                _describe(headerlist, representation)
            started.append(code)
            if exc_info is None:
                return start_response(status, headerlist)
            return start_response(status, headerlist, exc_info)

        app_iter = self.application(environ, start)
        digest = representation.digest
        if not (self.verify and plan.span is None and digest is not None
                and started and started[-1] == '200'):
            return app_iter
        hasher = verified.new_hash(digest[0])
        if hasher is None:
            return app_iter

        def broken(error):
            refusals.log_line(
                LOG, refusals.request_id(environ), error,
                what='image download', status='200 broken off',
                fields=_fields(environ, image_id),
                after=[('sent', error.sent), ('size', representation.size)])
        return verified.VerifiedBody(app_iter, representation.size, hasher,
                                     digest[1], broken)


def _describe(headerlist, representation):
    """Add the validator and ``Accept-Ranges`` to a list of headers or a
    webob header dict."""
    pairs = [('Accept-Ranges', 'bytes' if representation.ranged
              else 'none')]
    if representation.etag is not None:
        pairs.append(('ETag', representation.etag_header))
    for name, value in pairs:
        if isinstance(headerlist, list):
            headerlist.append((name, value))
        else:
            headerlist[name] = value


def _fields(environ, image_id):
    return [('image_id', headers.quote(image_id)),
            ('range', headers.quote(environ.get('HTTP_RANGE', '-'))),
            ('if_range', headers.quote(environ.get('HTTP_IF_RANGE', '-'))),
            ('if_match', headers.quote(environ.get('HTTP_IF_MATCH', '-')))]


def _default_store(conf):
    """``[glance_store] default_store``, the one store of a deployment
    without multiple backends, or None."""
    try:
        return conf.glance_store.default_store
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        return None

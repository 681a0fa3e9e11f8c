"""glance_store's HTTP driver, with restartable and ranged reads.

glance_store's HTTP driver reads an image from a web server with one GET,
with no timeout at all: a server that goes quiet holds a Glance worker
forever, and a connection that breaks leaves Glance's client with a body
cut short under the full ``Content-Length``. It asks for no range either,
so Glance answers 400 to any ranged download of an image stored there.

This driver reads through :mod:`sizeaware.store.restart`: every request
has a connect and a read timeout (``connect_timeout``, ``read_timeout``),
a body that delivers nothing for ``stall_timeout`` counts as broken, and a
broken read is asked for again from the exact byte it stopped at, with
``Range`` and ``If-Match`` the first answer's ETag, at most
``read_retries`` times; a restart that is not exactly the rest of the same
object (another ETag, a 412, a 200, another ``Content-Range``) fails the
read instead of being spliced. Redirects are followed as the stock driver
follows them (301 and 302, at most five), on the first request only:
restarts go to the URL that answered. The driver declares random reads,
so Glance serves ranged downloads of its images.

The web server must send a strong ``ETag`` and honour ``Range`` and
``If-Match`` (nginx and Apache do for static files); an image served
without a strong ETag is read as before, and fails at its first break
instead of being restarted blind.

Enable it by giving the backend the type ``sizeaware_http`` instead of
``http``; its options are those of the ``http`` driver plus the read
options of :data:`sizeaware.opts.store_read_opts`::

    [DEFAULT]
    enabled_backends = web:sizeaware_http

    [web]
    read_retries = 5

Locations stay ``http://`` and ``https://`` URLs, so images are readable by
either driver.
"""

import threading
import urllib.parse

from glance_store import capabilities
from glance_store import exceptions
from glance_store._drivers import http
import requests
import urllib3

from sizeaware import opts
from sizeaware.store import restart

# glance_store finds a driver's location class by name, in the driver's own
# module: image locations are the HTTP driver's, unchanged.
StoreLocation = http.StoreLocation

#: The entry point name, also claimed as a scheme: glance_store looks a
#: backend's store up by its type used as a URI scheme.
DRIVER_NAME = 'sizeaware_http'

#: What requests and urllib3 raise when a read's connection breaks, on top
#: of :data:`sizeaware.store.restart.BROKEN` (requests' errors are
#: ``OSError`` already).
BROKEN = restart.BROKEN + (urllib3.exceptions.HTTPError,)

_REDIRECTS = (301, 302)


class Store(http.Store):
    """The HTTP store; see the module docstring."""

    _CAPABILITIES = (http.Store._CAPABILITIES |
                     capabilities.BitMasks.READ_RANDOM)
    OPTIONS = http.Store.OPTIONS + opts.store_read_opts

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._session_lock = threading.Lock()
        self._read_session = None

    def get_schemes(self):
        return super().get_schemes() + (DRIVER_NAME,)

    @capabilities.check
    def get(self, location, offset=0, chunk_size=None, context=None):
        """The image's bytes ``[offset, offset + chunk_size)`` (all of it
        by default), read with restarts, and their length."""
        policy, settings = self._settings()
        session = self._session()
        store_location = location.store_location
        # The URL that answered the first request; restarts go there.
        target = {'url': store_location.get_uri()}

        def open_range(want):
            headers = {}
            if want.range is not None:
                headers['Range'] = want.range
            if want.etag is not None:
                headers['If-Match'] = want.etag
            for _ in range(http.MAX_REDIRECTS + 1):
                response = session.get(target['url'], headers=headers,
                                       **settings)
                if (response.status_code not in _REDIRECTS
                        or want.etag is not None):
                    break
                response.close()
                target['url'] = urllib.parse.urljoin(
                    target['url'], response.headers['Location'])
            else:
                raise exceptions.MaxRedirectsExceeded(
                    message='The HTTP URL exceeded %d maximum redirects.'
                    % http.MAX_REDIRECTS)
            status = response.status_code
            if status >= 300 and status not in (412, 416) and (
                    status not in restart.RETRYABLE_STATUSES):
                response.close()
                # The stock driver's errors: NotFound for 404,
                # BadStoreUri for the rest.
                self._check_store_uri(response, store_location)
                raise exceptions.BadStoreUri(
                    message='HTTP URL answered %d' % status)
            restart.set_body_timeout(response.raw, policy.stall_timeout)
            length = response.headers.get('Content-Length')
            return restart.Part(
                status, response.raw, response.headers.get('ETag'),
                response.headers.get('Content-Range'),
                int(length) if length is not None else None,
                response.close)

        reader = restart.open_reader(
            restart.RestartingReader, open_range, offset, chunk_size,
            policy=policy, broken=BROKEN, name='%s://%s%s' % (
                store_location.scheme, store_location.netloc,
                store_location.path))
        return restart.indexable(reader, self.READ_CHUNKSIZE), reader.expected

    def _store_conf(self):
        return restart.backend_options(self)

    def _settings(self):
        """The read policy, and the keyword arguments of every request:
        streamed, no redirect followed by requests, the policy's connect
        and read timeouts, the stock options' certificate checks and
        proxies."""
        conf = self._store_conf()
        policy = restart.Policy.from_conf(conf)
        return policy, {
            'stream': True, 'allow_redirects': False,
            'timeout': (policy.connect_timeout, policy.read_timeout),
            'verify': (conf.https_ca_certificates_file
                       or not conf.https_insecure),
            'proxies': conf.http_proxy_information,
        }

    def _get_response(self, location, verb):
        """The stock driver's request for ``get_size()`` (a HEAD, also
        when Glance checks an added location), with the timeouts."""
        return self._session().request(verb, location.get_uri(),
                                       **self._settings()[1])

    def _session(self):
        """One connection pool for the store's reads."""
        with self._session_lock:
            if self._read_session is None:
                self._read_session = requests.Session()
            return self._read_session

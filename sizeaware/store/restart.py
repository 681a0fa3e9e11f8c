"""Restartable, ranged reads of one backend object: the base of the store
drivers' ``get()``.

glance_store's S3, Swift and HTTP drivers read an image with one request:
when the connection breaks, times out or ends early, Glance's client gets a
body cut short under a ``Content-Length`` that promised more. This module
reads the object the way Swift's proxy does instead: when a read breaks, it
asks the backend for the rest, from the exact byte it stopped at, pinned to
the first answer's ETag, and checks that the answer is that rest before a
byte of it is passed on.

The interface a driver implements is one function::

    open_range(want: Want) -> Part

which sends one GET for ``want`` and returns the answer's status, headers
and body without judging them, and raises for what is not a readable
answer. :class:`Want` says what to ask for:

``want.range``
    the ``Range`` header's value (``bytes=10-19``, ``bytes=10-``), or None
    for the whole object (the first request of a whole read, which is a
    plain GET, as the stock drivers send);
``want.etag``
    None on the first request; afterwards the first answer's ETag, to be
    sent as ``If-Match`` (S3: ``IfMatch``) so that the backend refuses
    (412) a range of another object;
``want.start``, ``want.stop``
    the same range as numbers (``stop`` exclusive, None for "to the end").

:class:`Part` is the answer: ``status``, ``etag``, ``content_range``,
``content_length`` (the headers' values, or None), ``body`` (anything with
``read(n)``) and ``close`` (releases the connection; called once, on every
path). A driver turns a status its client raises for into a ``Part`` with
that status (botocore raises 412 as a ``ClientError``), raises its own
error for what the caller must see as is (404:
``glance_store.exceptions.NotFound``), and lets a broken connection out as
the client raises it.

:class:`RestartingReader` (a :class:`~sizeaware.stream.BodyStream`, so a
file with ``read``/``readinto``; :func:`indexable` makes it what
``Store.get()`` returns) then:

* opens the first answer when it is made (so ``get()`` raises what the
  first request raises) and learns the length and the ETag from it;
* requires 200 for a whole read and, for every ranged request, a 206 whose
  ``Content-Range`` is exactly the range asked for, of the same total
  (:func:`sizeaware.resume.check`); a 200 to a ranged request, another
  range, another total, another ETag or a 412 raise
  :class:`~sizeaware.exceptions.BackendObjectChanged` or
  :class:`~sizeaware.exceptions.BackendRangeMismatch`: nothing is ever
  spliced;
* counts as a broken read: an exception of the ``broken`` classes the
  driver names (connection reset, timeout, its client's streaming
  errors), a body that ends before the range does, a 408, 429, 500, 502,
  503 or 504 answer (:data:`sizeaware.resume.RETRYABLE_STATUSES`); each
  is followed by a new request for the rest after a backoff
  (``retry_backoff`` doubled at each failure in a row, at most
  :data:`MAX_BACKOFF`), at most ``read_retries`` times in a row without a
  byte between them, then :class:`~sizeaware.exceptions.BackendReadFailed`:
  a read that breaks now and then goes on as long as it advances
  (:class:`sizeaware.resume.Backoff`);
* never restarts without a strong ETag to pin the restart to: an object
  served without one fails at its first break;
* raises, never ends early: the consumer gets the whole range or an
  exception, and the first error is raised again on every later call.

Stalls (a body that delivers nothing for ``stall_timeout``) are broken
reads too: the driver gives the body's socket that timeout once the
headers are in (:func:`set_body_timeout`), ``read_timeout`` having bounded
the wait for them and ``connect_timeout`` the connection.

The options are :data:`sizeaware.opts.store_read_opts`, registered by each
driver in its backend's section; :meth:`Policy.from_conf` reads them.

A driver's ``get()`` makes its reader with :func:`open_reader`: the
first request is sent then, before Glance has answered its client, and
when it gets no answer at all (the backend refused or dropped every
connection, timed out, or answered 408, 429 or 5xx until the retries were
spent), Glance must answer 503, not 500: that is glance_store's
``RemoteServiceUnavailable``, the one store error Glance maps so.

Counters for logs and benchmarks: :attr:`RestartingReader.requests` (GETs
sent), :attr:`RestartingReader.restarts` (those after the first) and
:attr:`RestartingReader.received` (bytes delivered).
"""


import dataclasses
import http.client
import logging
import time

from sizeaware import exceptions
from sizeaware import resume
from sizeaware import stream

LOG = logging.getLogger(__name__)

#: The longest wait between two attempts, in seconds.
MAX_BACKOFF = 30.0
#: What :func:`chunks` reads per piece unless told (drivers pass their
#: stock driver's ``READ_CHUNKSIZE``).
CHUNK_SIZE = 64 * 1024
#: Answers after which the same request may succeed.
RETRYABLE_STATUSES = resume.RETRYABLE_STATUSES
#: What every driver's reads raise when the connection breaks.
BROKEN = (OSError, http.client.HTTPException)
#: The store's errors for answers that must not be spliced.
ERRORS = resume.Errors(changed=exceptions.BackendObjectChanged,
                       mismatch=exceptions.BackendRangeMismatch)

Want = resume.Want
Part = resume.Part
strong = resume.strong


@dataclasses.dataclass(frozen=True)
class Policy:
    """The options of :data:`sizeaware.opts.store_read_opts`."""

    read_retries: int = 5
    retry_backoff: float = 1.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    stall_timeout: float = 30.0

    @classmethod
    def from_conf(cls, store_conf) -> 'Policy':
        """The policy of a backend's section (any object with the options
        as attributes, such as glance_store's
        ``BackendGroupConfiguration``)."""
        return cls(**{field.name: getattr(store_conf, field.name)
                      for field in dataclasses.fields(cls)})

    def backoff(self, give_up, sleep=time.sleep) -> resume.Backoff:
        """The retry budget of one read: ``read_retries`` failures in a
        row, waits from ``retry_backoff`` up to :data:`MAX_BACKOFF`."""
        return resume.Backoff(self.read_retries, self.retry_backoff,
                              MAX_BACKOFF, give_up=give_up, sleep=sleep)


class RestartingReader(stream.BodyStream):
    """The bytes ``[start, start + length)`` of one backend object, read
    with restarts; see the module docstring.

    :param open_range: ``open_range(Want) -> Part``, the driver's request.
    :param start: the first byte.
    :param length: how many bytes, or None for the rest of the object.
    :param policy: a :class:`Policy`.
    :param broken: the exceptions of the driver's client that mean a broken
        connection (default :data:`BROKEN`).
    :param name: how logs name the object.
    :param sleep: ``time.sleep``, replaceable by tests.
    """

    def __init__(self, open_range, start=0, length=None, *, policy=None,
                 broken=BROKEN, name='object', sleep=time.sleep):
        super().__init__(self._pull_piece, None, delimited=True)
        if start < 0 or (length is not None and length < 0):
            raise ValueError('negative range')
        self._open_range = open_range
        self.policy = policy or Policy()
        self._broken = tuple(broken)
        self._backoff = self.policy.backoff(self._spent, sleep)
        self.name = name
        self.start = start
        #: The next byte of the object to ask for.
        self.position = start
        #: Where the read ends (exclusive), once known.
        self.stop = None if length is None else start + length
        #: The object's whole size, once an answer said it.
        self.total = None
        #: The ETag the read is pinned to.
        self.etag = None
        #: GETs sent, and those of them after the first.
        self.requests = 0
        self.restarts = 0
        self._part = None
        if length == 0:
            self.expected = 0
            return
        self._part = self._attempt(self._want(first=True), first=True)
        if self.stop is not None:
            self.expected = self.stop - start

    # -- what the driver sees -----------------------------------------------

    def close(self):
        self._release()
        super().close()

    # -- the source of the stream -------------------------------------------

    def _pull_piece(self, hint):
        while True:
            if self.stop is not None and self.position >= self.stop:
                self._release()
                return b''
            if self._part is None:
                self._part = self._restart()
                continue
            wanted = hint
            if self.stop is not None:
                wanted = min(hint, self.stop - self.position)
            try:
                data = self._part.body.read(wanted)
            except self._broken as exc:
                self._lost(exc)
                continue
            if data:
                if len(data) > wanted:
                    self._fail(exceptions.BackendRangeMismatch(
                        '%s: the backend sent more than the %d bytes asked '
                        'for at byte %d' % (self.name, wanted,
                                             self.position)))
                self.position += len(data)
                self._backoff.progressed()
                return data
            if self.stop is None:
                # No length was ever given: a clean end is the end.
                self._release()
                return b''
            self._lost(exceptions.BackendReadFailed(
                '%s: the body ended at byte %d of %d'
                % (self.name, self.position, self.stop)))

    def _want(self, first=False):
        whole = first and self.start == 0 and self.stop is None
        return Want(self.position, self.stop, None if first else self.etag,
                    whole)

    def _restart(self):
        """The answer for the rest of the range, or raise."""
        try:
            return self._attempt(self._want())
        except exceptions.BackendReadError:
            raise
        except Exception as exc:
            # The driver's own error (the object gone: 404): kept, and
            # raised again by every later call, as the stream's errors are.
            self._fail(exc)

    def _attempt(self, want, first=False):
        """Send ``want`` until an answer is usable or the retries are
        spent."""
        while True:
            if self.requests:
                self.restarts += 1
                LOG.info('Restarting the read of %s at byte %d (retry %d '
                         'of %d in a row)', self.name, self.position,
                         self._backoff.failures, self.policy.read_retries)
            self.requests += 1
            try:
                part = self._open_range(want)
            except self._broken as exc:
                LOG.warning('Request for %s from byte %d failed: %s',
                            self.name, want.start, exc)
                self._retry(exc)
                continue
            try:
                if resume.retryable(part.status):
                    LOG.warning('Request for %s from byte %d answered %d',
                                self.name, want.start, part.status)
                    _close(part)
                    self._retry('answered %d' % part.status)
                    continue
                self._check(part, want, first)
            except BaseException:
                _close(part)
                raise
            return part

    def _check(self, part, want, first):
        """Raise unless ``part`` is exactly what ``want`` asked for."""
        try:
            total = resume.check(want, part, self.total, ERRORS, self.name)
        except exceptions.BackendReadError as error:
            self._fail(error)
        if first:
            self.total = total
            self.etag = strong(part.etag)
            if self.stop is None and total is not None:
                self.stop = total
                self.expected = total - self.start

    def _lost(self, reason):
        """The current answer broke; the next pull asks for the rest."""
        self._release()
        LOG.warning('Read of %s broke at byte %d: %s', self.name,
                    self.position, reason)
        if self.etag is None:
            self._fail(exceptions.BackendReadFailed(
                '%s: the read broke at byte %d and the backend gave no '
                'strong ETag to pin a restart to' % (self.name,
                                                     self.position)))
        self._retry(reason)

    def _retry(self, reason):
        """Count a failure in a row and wait, or fail the read."""
        try:
            self._backoff.failed(reason)
        except exceptions.BackendReadFailed as error:
            self._fail(error)

    def _spent(self, failures, reason):
        return exceptions.BackendReadFailed(
            '%s: gave up at byte %d after %d retries in a row without a '
            'byte (last: %s)' % (self.name, self.position, failures, reason))

    def _release(self):
        part, self._part = self._part, None
        if part is not None:
            _close(part)

    def _fail(self, error):
        self._release()
        super()._fail(error)


def _close(part):
    try:
        part.close()
    except Exception:
        LOG.debug('Closing an answer failed', exc_info=True)


def open_reader(make, *args, **kwargs):
    """``make(*args, **kwargs)``: a :class:`RestartingReader` (or a
    subclass), which sends the read's first request as it is made; a first
    request that got no answer raised as glance_store's
    ``RemoteServiceUnavailable`` (see the module docstring); the driver's
    own errors (``NotFound``) and an answer that is not what was asked
    unchanged."""
    from glance_store import exceptions as store_exceptions

    try:
        return make(*args, **kwargs)
    except exceptions.BackendReadFailed as exc:
        raise store_exceptions.RemoteServiceUnavailable(
            message=str(exc)) from exc


def chunks(reader, size=CHUNK_SIZE):
    """The reader's bytes in pieces of up to ``size``, closing it at the
    end, on an error, and when the consumer stops early."""
    try:
        while data := reader.read(size):
            yield data
    finally:
        reader.close()


def indexable(reader, size=CHUNK_SIZE):
    """What a driver's ``get()`` returns for ``reader``: glance_store's
    ``Indexable`` over :func:`chunks`, of the read's length."""
    from glance_store import backend

    class _Indexable(backend.Indexable):
        def another(self):
            try:
                return next(self.wrapped)
            except StopIteration:
                return b''

        def close(self):
            self.wrapped.close()

    return _Indexable(chunks(reader, size), reader.expected)


def backend_options(store):
    """A glance_store store's options, its read options among them: the
    backend's section (through glance_store 5.x's
    ``BackendGroupConfiguration``, which grafts on the shared defaults;
    glance_store 4.x reads the section itself), or ``[glance_store]`` for
    a deployment without multiple backends."""
    if not store.backend_group:
        return store.conf.glance_store
    from glance_store import driver
    group_conf = getattr(driver, 'BackendGroupConfiguration', None)
    if group_conf is None:
        return getattr(store.conf, store.backend_group)
    return group_conf(store.OPTIONS, store.backend_group, conf=store.conf)


def set_body_timeout(raw, seconds) -> bool:
    """Give the socket under a urllib3 response ``raw`` the timeout
    ``seconds`` for the rest of its body; False if it has none to set.

    requests (``response.raw``) and botocore (a ``StreamingBody``'s raw
    stream) both read through urllib3, whose ``HTTPResponse.connection``
    is the connection the body is read from.
    """
    sock = getattr(getattr(raw, 'connection', None), 'sock', None)
    if sock is None:
        return False
    sock.settimeout(seconds)
    return True

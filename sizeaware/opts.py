"""Every configuration option of sizeaware, in one place.

Options live in the ``[sizeaware]`` group of the service's configuration
file (``glance-api.conf`` when the filter runs inside Glance). Any of them
may also be set in the filter's own section of ``glance-api-paste.ini``,
where it overrides the file, as with oslo.middleware's filters.

``list_opts`` is the ``oslo.config.opts`` entry point that
``oslo-config-generator`` reads to write ``etc/sizeaware.conf.sample``.
"""

import copy

from oslo_config import cfg
from oslo_utils import units

GROUP = 'sizeaware'

size_filter_opts = [
    cfg.IntOpt(
        'max_image_size',
        default=units.Ti,
        min=0,
        help="""
The largest image size, in bytes, that a client may declare in the
``X-OpenStack-Image-Size`` header.

A larger declared size is answered with 413 Request Entity Too Large before
any byte of the body is read, so an over-sized upload costs neither
bandwidth nor storage.

Possible values:
    * A non-negative integer. The default, 1 TiB, equals the default of
      Glance's ``image_size_cap``.

Related options:
    * Glance's ``image_size_cap``: set both to the same value, so that an
      image this filter admits is never refused by Glance afterwards.
"""),
    cfg.BoolOpt(
        'require_image_size',
        default=False,
        help="""
Refuse image uploads whose size is unknown up front.

When true, a ``PUT`` to ``/v2/images/{id}/file`` or ``/stage`` that carries
neither ``X-OpenStack-Image-Size`` nor ``Content-Length`` is answered with
411 Length Required. Stores such as Ceph RBD, Cinder and S3 work far better
when they know the size before the first byte arrives; this option lets a
deployment insist on it.

Possible values:
    * False (default): such uploads pass through unchanged.
    * True: such uploads are refused with 411.

Related options:
    * ``max_image_size``
"""),
]

resumable_opts = [
    cfg.StrOpt(
        'spool_dir',
        default='/var/lib/glance/sizeaware-spool',
        help="""
The directory where the resumable filter keeps partial uploads until they
are complete.

Each transfer session gets a subdirectory holding its image's bytes, so the
directory needs room for the images being uploaded (see
``spool_max_bytes``). It is created (mode 0700) if missing; the Glance API
user must be able to write it. Every Glance API process of a node must use
the same directory. Several nodes behind one load balancer either share it
on a filesystem with coherent POSIX record locks (NFSv4, CephFS) or route
each image's requests to one node (consistent hashing on the path).

Possible values:
    * An absolute path. The default lies in Glance's own state directory.

Related options:
    * ``spool_max_bytes``
"""),
    cfg.IntOpt(
        'spool_max_bytes',
        default=100 * units.Gi,
        min=0,
        help="""
The most bytes the transfer sessions in ``spool_dir`` may reserve together.

A session reserves its image's whole size when it is created; a session
that would take the total above this value, or more than the free space of
the spool's filesystem, is refused with 507 Insufficient Storage, so a full
spool never becomes a full disk.

Possible values:
    * A non-negative integer; the default is 100 GiB.

Related options:
    * ``spool_dir``, ``max_image_size``
"""),
    cfg.IntOpt(
        'max_sessions_per_project',
        default=10,
        min=1,
        help="""
The most transfer sessions a project may have in progress at once.

One more is refused with 429 Too Many Requests until one of them finishes,
is cancelled or expires.

Possible values:
    * A positive integer.
"""),
    cfg.IntOpt(
        'session_inactivity_timeout',
        default=24 * 3600,
        min=1,
        help="""
Seconds after its last request at which a transfer session expires.

Every request to a session (a range written, its status read) extends it
by this much. An expired session ends as ``cancelled_system`` and its
spooled bytes are removed by a sweep that requests trigger (no daemon is
needed).

Possible values:
    * A positive number of seconds; the default is one day.

Related options:
    * ``session_max_age``
"""),
    cfg.IntOpt(
        'session_max_age',
        default=7 * 24 * 3600,
        min=1,
        help="""
Seconds after its creation at which a transfer session expires, however
active it is.

Possible values:
    * A positive number of seconds; the default is seven days.

Related options:
    * ``session_inactivity_timeout``
"""),
    cfg.IntOpt(
        'session_retention',
        default=24 * 3600,
        min=0,
        help="""
Seconds a transfer session's status document is kept after the session
ended (finished, failed or cancelled).

Meanwhile its owner still reads how it ended (phase, error, the time of
each phase change) at its URL; anyone else gets 404, as before. Only the
record is kept: the session's bytes are removed when it ends.

Possible values:
    * A non-negative number of seconds; the default is one day.
"""),
    cfg.BoolOpt(
        'finalize_while_receiving',
        default=False,
        help="""
Hand the image to Glance while the request that completes it is still
arriving, instead of once every byte is in the spool.

When a request's bytes complete the image (one ``PUT`` with the whole
image, or the last tus ``PATCH``), Glance then reads the bytes already
held from the spool and this request's bytes as they arrive, while they
are also written to the spool; the checks of finalize still run before
Glance receives the last byte. The image is then ``active`` a fraction of
a second after its last byte instead of seconds per GiB later (the time
for Glance to store it), and where the API worker has a core to spare
the upload takes about as long as a plain upload.

The cost: if the Glance API worker dies (is killed, runs out of memory)
while such a request is arriving, Glance leaves the image in ``saving``,
as it does for a plain upload, and the upload cannot be finished; without
this option the image stays ``queued`` and the client resumes. A dropped
connection is not affected: the image goes back to ``queued`` and every
byte that arrived is kept.

Possible values:
    * False (default): finalize once every byte is in the spool.
    * True: finalize while the completing request arrives.
"""),
]

in_store_opts = [
    cfg.StrOpt(
        'session_storage',
        default='store',
        choices=[('store', 'write into the store the image goes to, where '
                  'the store allows; the spool elsewhere'),
                 ('spool', 'write every session into the spool')],
        help="""
Where a resumable upload's bytes are written while it is in progress.

With ``store``, an upload to an RBD store is written at each range's
offset into the very RBD image the store will serve, and one to an S3
store goes straight up as parts of the image's own multipart upload; the
session is kept beside the bytes (in the pool, in the bucket), so any API
node continues it. Finalizing only checks what is there and hands its
location to Glance's location API: the image is ``active`` a moment after
its last byte, whatever its size, and the API node's disk holds none of
it. Uploads to any other store (Glance refuses ``file://`` locations, so
a filesystem store among them), to ``/stage``, and tus concatenation use
the spool. Glance lets only the ``service`` role add a location: grant it
through ``[sizeaware_service_user]``.

Possible values:
    * store (default): store-native sessions where the store allows.
    * spool: every session in ``spool_dir``, handed to Glance as one
      upload at finalize.

Related options:
    * ``spool_dir``, ``glance_url``, ``commit_timeout``
"""),
    cfg.URIOpt(
        'glance_url',
        schemes=['http', 'https'],
        help="""
Where this Glance API answers, for the location of a store-native session.

Possible values:
    * A URL; unset: Glance's ``worker_self_reference_url`` (or
      ``public_endpoint``), else the address the upload came to.
"""),
    cfg.IntOpt(
        'commit_timeout',
        default=60,
        min=1,
        # Below the hold a finalize has on a session kept in a cluster
        # (sizeaware.sessions.storage.cluster.FINALIZE_LEASE).
        max=240,
        help="""
Seconds finalizing a store-native session waits for Glance to make the
image ``active`` from its location.

When it has not, the session keeps every byte (``paused_system``) and
finalizing again tells whether Glance did meanwhile.
"""),
]

download_filter_opts = [
    cfg.BoolOpt(
        'verify_download',
        default=False,
        help="""
Verify every whole-image download against the image's recorded checksum
as it streams out.

The download filter hashes the bytes the store hands back with the
image's ``os_hash_algo`` and compares the result with its
``os_hash_value`` (or, for an image without one, the MD5 ``checksum``)
before the last byte leaves; on a mismatch, or a body that ends before or
after the image's size, it breaks the connection instead, so a client never
receives a complete-looking wrong image, and logs one line. A ranged
download (206) is not verified: a part of an image cannot be checked
against the whole image's checksum.

The hash costs one pass over the image in the API process (SHA-512 runs
at several hundred MiB/s per core).

Possible values:
    * False (default): downloads are passed on as the store hands them.
    * True: whole-image downloads are verified.
"""),
    cfg.ListOpt(
        'ranged_store_types',
        default=[],
        help="""
The glance_store store types (or backend names) whose images Glance can
serve in ranges; empty to ask glance_store.

For an image whose backends all read at an offset, the download filter
answers ``Accept-Ranges: bytes`` and lets ranged requests through to
Glance; for any other image it answers ``Accept-Ranges: none`` and serves
a ranged request the whole image with 200, as RFC 9110 allows, where
Glance would answer 400. An image's backends are the ``stores`` of its
record (the ``default_store`` of ``[glance_store]`` for a deployment
without multiple backends).

Possible values:
    * Empty (default): ask glance_store, in the Glance API process,
      whether each backend's driver declares random-access reads
      (``READ_RANDOM``), as Glance itself does before it serves a range:
      ``file``, ``cinder`` and sizeaware's drivers do, the stock ``rbd``,
      ``s3``, ``swift`` and ``http`` do not.
    * A list of store types (``file``, ``sizeaware_s3``, ...) or backend
      names of ``enabled_backends``: only these. A type named here whose
      driver does not read at an offset turns every resumed download of
      its images into 400.
"""),
]


#: The section name :func:`list_store_opts` shows the store options under;
#: each goes into the section of the backend whose type is a sizeaware
#: driver (``[cloud]`` for ``enabled_backends = cloud:sizeaware_s3``).
STORE_GROUP = 'backend'

#: Options of the restartable reads of every sizeaware store driver
#: (:mod:`sizeaware.store.restart`). Each driver adds them to its
#: ``OPTIONS``, so glance_store registers them in the section of each
#: backend of that driver, beside the stock driver's own options.
store_read_opts = [
    cfg.IntOpt(
        'read_retries',
        default=5,
        min=0,
        help="""
How many times in a row a read of an image from this backend is requested
again after it broke, before the download fails. Any byte that arrives
between two breaks makes the count start again, so a long read on a flaky
link is never given up while it advances.

A read breaks when the connection is reset or times out, when the body
ends before its length, when it stalls (see ``stall_timeout``), or when the
backend answers 408, 429 or 5xx. Each retry asks for the rest of the
image only, from the byte the read stopped at, pinned to the first
answer's ETag; the client's download goes on as one stream. When the
retries are spent, the client's connection is broken, so it never holds a
short image that looks complete. This is the only retry of a read: the
client library's own retries are switched off under it.

Possible values:
    * 0: no retry; a broken read fails the download at once.
    * A positive integer.

Related options:
    * ``retry_backoff``, ``stall_timeout``
"""),
    cfg.FloatOpt(
        'retry_backoff',
        default=1.0,
        min=0,
        help="""
Seconds to wait before the first retry of a broken read; each further
failure in a row doubles the wait, up to 30 seconds. A retry that delivers
bytes starts the doubling again.

Possible values:
    * A non-negative number of seconds.

Related options:
    * ``read_retries``
"""),
    cfg.FloatOpt(
        'connect_timeout',
        default=10.0,
        min=0.1,
        help="""
Seconds to wait for a connection to the backend to be made, for every
read request.

Possible values:
    * A positive number of seconds.

Related options:
    * ``read_timeout``, ``stall_timeout``
"""),
    cfg.FloatOpt(
        'read_timeout',
        default=60.0,
        min=0.1,
        help="""
Seconds to wait for the backend to begin its answer (status and headers)
to a read request; a request that waits longer counts as a broken read.

Possible values:
    * A positive number of seconds.

Related options:
    * ``connect_timeout``, ``stall_timeout``, ``read_retries``
"""),
    cfg.FloatOpt(
        'stall_timeout',
        default=30.0,
        min=0.1,
        help="""
Seconds an answer's body may go without delivering a byte before the read
counts as broken and is requested again from where it stopped.

Possible values:
    * A positive number of seconds.

Related options:
    * ``read_timeout``, ``read_retries``
"""),
]


def option_value(middleware, options, name):
    """An option's value for a paste filter, parsed once, at load time.

    A value from the filter's paste section is converted and validated by
    the option's own type, and not written into the shared configuration
    object, so two pipelines can each carry their own setting.
    """
    if name in middleware.conf:
        opt = next(o for o in options if o.name == name)
        return opt.type(middleware.conf[name])
    return getattr(getattr(middleware.oslo_conf, GROUP), name)


def list_opts():
    """Options for ``oslo-config-generator``, grouped by section."""
    from sizeaware.sessions import locations
    return [(GROUP, copy.deepcopy(size_filter_opts + resumable_opts
                                  + in_store_opts + download_filter_opts))
            ] + locations.list_opts()


def list_download_opts():
    """The download filter's options alone, for its page of the
    documentation (``.. show-options:: sizeaware.download``)."""
    return [(GROUP, copy.deepcopy(download_filter_opts))]


def list_store_opts():
    """The store drivers' read options, for ``.. show-options::`` (each
    belongs in a backend's own section; see :data:`STORE_GROUP`)."""
    return [(STORE_GROUP, copy.deepcopy(store_read_opts))]

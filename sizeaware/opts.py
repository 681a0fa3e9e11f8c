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


def list_opts():
    """Options for ``oslo-config-generator``, grouped by section."""
    return [(GROUP, copy.deepcopy(size_filter_opts))]

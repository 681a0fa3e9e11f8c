"""Whether the store holding an image reads it at an offset.

Glance serves a ``Range`` only from a store whose glance_store driver
declares random-access reads (``READ_RANDOM``); from any other it answers
400. The download filter runs in Glance's own process, where glance_store
is configured, and asks glance_store the same question about the backends
an image's record names (its ``stores``), so that ``Accept-Ranges`` and
what Glance does with a range agree by construction, for stock drivers and
for sizeaware's (``sizeaware_s3``, ``sizeaware_swift``, ``sizeaware_http``,
``sizeaware_rbd`` read at an offset).
"""

from glance_store import capabilities
from oslo_config import cfg


def find_store(name, multi):
    """The glance_store store of backend ``name`` (of ``enabled_backends``)
    or, in a deployment without multiple backends, of scheme ``name``.

    :raises Exception: whatever glance_store raises for a backend it does
        not know (``UnknownScheme``), or one not configured in this
        process.
    """
    if multi:
        from glance_store import multi_backend
        return multi_backend.get_store_from_store_identifier(name)
    from glance_store import backend
    return backend.get_store_from_scheme(name)


def reads_at_offset(store):
    """Whether ``store`` declares random-access reads, as Glance checks
    before it asks it for a range."""
    return store.is_capable(capabilities.BitMasks.READ_RANDOM)


def configured(conf):
    """``(multi, default backend name)`` of Glance's configuration: whether
    it has ``enabled_backends``, and ``[glance_store] default_backend`` (or,
    without, ``default_store``); the default is None outside Glance."""
    enabled = types(conf)
    try:
        if enabled:
            return True, conf.glance_store.default_backend
        return False, conf.glance_store.default_store
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        return bool(enabled), None


def types(conf):
    """``{backend name: store type}`` of Glance's ``enabled_backends``, or
    ``{}`` where the option is not registered (outside Glance) or empty."""
    try:
        enabled = conf.enabled_backends
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        return {}
    return dict(enabled or {})

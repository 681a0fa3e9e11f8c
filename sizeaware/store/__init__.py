"""glance_store glue: drivers that wrap glance_store's own.

Each driver here subclasses a glance_store driver and is registered under
the ``glance_store.drivers`` entry point, so an operator enables it by
naming it as the type of a backend in ``enabled_backends``. Image locations
keep their schemes, so images stored before the switch stay readable.
"""

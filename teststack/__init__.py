"""Stand up the real servers the functional tests, the benchmarks and the
local demo run against: Glance under uwsgi, and what it needs around it.

Everything listens on 127.0.0.1, keeps its state under one state directory
(``.stack/`` in the checkout, or ``$SIZEAWARE_STACK_DIR``) and is stopped by
its own PID. Nothing here is shipped with the ``sizeaware`` package.
"""

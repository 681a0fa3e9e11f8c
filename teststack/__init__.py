"""Stand up the real servers the functional tests, the benchmarks and the
local demo run against: Glance under uwsgi, and what it needs around it.

Every server is a :class:`teststack.process.Service`: it listens on
127.0.0.1, keeps its state under one state directory (``.stack/`` in the
checkout, or ``$SIZEAWARE_STACK_DIR``; PostgreSQL's in the system's
temporary directory, which its unprivileged user can reach) and is stopped
by its own PID. ``python -m teststack`` is the command line. Nothing here is
shipped with the ``sizeaware`` package.
"""

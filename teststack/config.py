"""Configuration text shared by every server of the stack.

``{section: {option: value}}`` dicts become ini files here, and every WSGI
service runs under uwsgi with the same devstack-like options, so a fix to
either (a uwsgi quirk, a value's spelling) lands in one place.
"""

import pathlib


def ini_value(value) -> str:
    """An option value as ini text: bools as true/false, lists joined."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if isinstance(value, (list, tuple)):
        return ','.join(ini_value(v) for v in value)
    return str(value)


def render_ini(sections) -> str:
    """``{section: {option: value}}`` as ini text; None values are left out.
    """
    out = []
    for section, options in sections.items():
        out.append('[%s]' % section)
        for key, value in options.items():
            if value is None:
                continue
            out.append('%s = %s' % (key, ini_value(value)))
        out.append('')
    return '\n'.join(out)


def merge_conf(*confs) -> dict:
    """``{section: {option: value}}`` dicts merged left to right into a new
    one; an option set to None by a later dict is removed."""
    out = {}
    for conf in confs:
        for section, options in (conf or {}).items():
            target = out.setdefault(section, {})
            for key, value in options.items():
                if value is None:
                    target.pop(key, None)
                else:
                    target[key] = value
    return out


def uwsgi_options(port, workdir, venv, *, processes=1, threads=4,
                  request_bodies=False, host='127.0.0.1') -> dict:
    """The ``[uwsgi]`` options every service of the stack runs with, as
    devstack runs OpenStack APIs.

    :param host: the address to listen on, a loopback one.
    :param request_bodies: also the options an API receiving large and
        chunked request bodies needs (Glance).
    """
    options = {
        'http-socket': '%s:%d' % (host, port),
        'master': True,
        'processes': processes,
        'threads': threads,
        'enable-threads': True,
        'lazy-apps': True,
        # Without it TERM means "reload".
        'die-on-term': True,
        'buffer-size': 65535,
        'need-app': True,
        # http-socket answers HTTP/1.1 without keep-alive and without
        # saying so: a client reusing the connection (requests.Session,
        # glanceclient, openstacksdk) then gets "connection reset" on about
        # half of its requests. Tell clients to close.
        'add-header': 'Connection: close',
        'pidfile': pathlib.Path(workdir) / 'uwsgi.pid',
        'virtualenv': venv,
        'chdir': workdir,
    }
    if request_bodies:
        options.update({
            'http-raw-body': True,
            'http-chunked-input': True,
            'http-auto-chunked': True,
            # uwsgi.chunked_read() refuses a chunk bigger than this (default
            # 1 MiB, so python-glanceclient's 1 MiB chunks fail with "unable
            # to receive chunked part"); the buffer only grows as needed.
            'chunked-input-limit': 64 * 1024 * 1024,
        })
    return options

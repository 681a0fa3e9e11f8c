"""A what-if for the benchmarks: the filter's reader handed on unwrapped.

Not part of sizeaware, and not deployed anywhere but in the benchmarks'
``--whatif`` runs. ``SizeFilter`` sets ``CONTENT_LENGTH`` and drops
``webob._body_file``; webob's ``Request.body_file`` then wraps the filter's
``SizedBodyReader`` in ``io.BufferedReader(LimitedLengthFile(...))``, which
copies every read once more and adds two Python layers per read, although
the reader already holds the body to its length. Placed right after
``sizeaware``, this middleware does what the filter could do itself in
``_admit``: ``environ['webob._body_file'] = (reader, reader)``, webob's own
cache of its wrapper, so that ``body_file`` is the reader itself.

Paste: ``[filter:benchunwrap]`` with
``paste.filter_factory = whatif:filter_factory`` (``benchmarks/`` on the
server's Python path).
"""

EXPECTED_SIZE_KEY = 'sizeaware.expected_size'


def unwrap(app):
    def middleware(environ, start_response):
        reader = environ.get('wsgi.input')
        if environ.get(EXPECTED_SIZE_KEY) is not None and reader is not None:
            environ['webob._body_file'] = (reader, reader)
        return app(environ, start_response)
    return middleware


def filter_factory(global_conf, **local_conf):
    return unwrap

"""CPU time and page faults of reading a body, in process, per GiB.

Isolates the per-read cost of the filter's ``BodyStream`` from
servers and networks: a source that makes a new ``bytes`` per read (as
uwsgi's ``wsgi.input.read`` and ``uwsgi.chunked_read()`` do) is read to its
end, ``--read-sizes`` bytes at a time, in five ways:

``CL, webob``           webob's wrapper around the source (Glance, no filter)
``CL, filter+webob``    webob's wrapper around the filter's reader (how
                        the filter was before it handed webob the reader)
``CL, filter``          the filter's reader read directly (how Glance
                        reads it now)
``chunked, filter+webob``, ``chunked, filter``
                        the same for a chunked body of ``--chunk`` chunks

Each figure is the best of ``--repeat`` runs (process CPU time), with the
minor page faults of the last one. Run from the repository root::

    .stack/venvs/glance-33/bin/python benchmarks/reader_cpu.py

Not a test: nothing is asserted.
"""

import argparse
import io
import resource
import sys
import time

import _common
from _common import GiB
import webob.request

from sizeaware import stream


def _length_source(size):
    left = [size]

    def read(n=-1):
        n = left[0] if n is None or n < 0 else min(n, left[0])
        left[0] -= n
        return bytes(n)
    return read


def _chunk_source(size, chunk):
    left = [size]

    def pull(hint=None):
        n = min(chunk, left[0])
        left[0] -= n
        return bytes(n)
    return pull


def _webob(raw, size):
    return io.BufferedReader(webob.request.LimitedLengthFile(raw, size))


WAYS = {
    'CL, webob': lambda s, c: _webob(_Raw(_length_source(s)), s),
    'CL, filter+webob': lambda s, c: _webob(stream.BodyStream(
        _length_source(s), s, delimited=True), s),
    'CL, filter': lambda s, c: stream.BodyStream(
        _length_source(s), s, delimited=True),
    'chunked, filter+webob': lambda s, c: _webob(stream.BodyStream(
        _chunk_source(s, c), s, delimited=False), s),
    'chunked, filter': lambda s, c: stream.BodyStream(
        _chunk_source(s, c), s, delimited=False),
}


class _Raw:
    def __init__(self, read):
        self.read = read


def measure(make, size, chunk, read_size, repeat):
    best, faults = None, 0
    for _ in range(repeat):
        reader = make(size, chunk)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        started = time.process_time()
        total = 0
        while True:
            data = reader.read(read_size)
            if not data:
                break
            total += len(data)
        seconds = time.process_time() - started
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        if total != size:
            raise RuntimeError('read %d of %d' % (total, size))
        best = seconds if best is None else min(best, seconds)
    return best, faults


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=_common.parse_size, default='1G')
    parser.add_argument('--read-sizes', default='64K,5M',
                        help='default 64K (filesystem store), 5M (S3)')
    parser.add_argument('--chunk', type=_common.parse_size, default='64K',
                        help='chunk size of the chunked body (default 64K)')
    parser.add_argument('--repeat', type=int, default=3)
    args = parser.parse_args(argv)
    rows = []
    for read_size in [_common.parse_size(r)
                      for r in args.read_sizes.split(',')]:
        for name, make in WAYS.items():
            seconds, faults = measure(make, args.size, args.chunk, read_size,
                                      args.repeat)
            rows.append([_common.human(read_size), name,
                         '%.3f' % (seconds * GiB / args.size),
                         '%d' % (faults * GiB // args.size)])
            _common.log('%s %s: %.3f s' % (read_size, name, seconds))
    print()
    print(_common.machine_line())
    print()
    print(_common.table(
        ['read size', 'way', 'CPU s per GiB', 'minor faults per GiB'], rows,
        title='Reading a %s body in process, chunks of %s, best of %d'
              % (_common.human(args.size), _common.human(args.chunk),
                 args.repeat)))
    return 0


if __name__ == '__main__':
    sys.exit(main())

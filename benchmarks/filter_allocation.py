"""How much memory the filter itself allocates while a body streams through.

In-process: ``SizeFilter`` (built by ``SizeFilter.factory({})``) in front of
an app that drains the body the way Glance does (``webob`` ``body_file``,
``--read-size`` bytes at a time, default 64 KiB as the filesystem store
reads). The body comes from a synthetic source that hands out preallocated
blocks, so the source allocates nothing per read:

* ``content-length``: ``wsgi.input.read(n)`` returns a preallocated block;
* ``chunked``: a fake ``uwsgi`` module whose ``chunked_read()`` returns a
  preallocated ``--chunk`` (default 1 MiB) block, with ``uwsgi.version`` in
  the environ, so the filter takes its uwsgi path, as under real uwsgi.

Two figures per case, from ``tracemalloc`` (one frame per trace, so a
block is charged to the file whose code allocated it):

``sizeaware peak``
    the most memory allocated by sizeaware's own files (``sizeaware/*``)
    and alive at once. Sampled at every line and return event of sizeaware
    code (``sys.settrace``), which sees every state right after a
    sizeaware allocation, so it is exact where it is sampled: while the
    body is within ``--window`` (default 8 MiB) of its start or its end
    (sampling all of a 1 GiB body takes many minutes; ``--window 0`` does
    it). The reader's work is the same for every chunk, and the columns
    ``traced at events`` show it: everything tracemalloc holds at
    sizeaware's events inside the windows / outside them (cheap, sampled
    over the whole body); outside never exceeds inside.
``request peak``
    tracemalloc's peak for the whole request and the whole body, above
    what was allocated before it (a separate pass without the tracer):
    what the filter, webob and the drain app hold at once. The ``without
    filter`` rows are the same drain app reading the source directly
    (chunked: through Glance's ``_UWSGIChunkFile`` when Glance is
    importable, as Glance does without the filter).

Run from the repository root with a Glance venv's Python::

    .stack/venvs/glance-33/bin/python benchmarks/filter_allocation.py
    .stack/venvs/glance-33/bin/python benchmarks/filter_allocation.py \\
        --sizes 100M,1G --read-size 5M

Not a test: nothing is asserted.
"""

import argparse
import gc
import os
import sys
import time
import tracemalloc
import types

import _common
from _common import KiB
from _common import MiB
import webob

from sizeaware.middleware import size_filter

try:
    from glance.common.wsgi import Request as GlanceRequest
except ImportError:  # outside a Glance venv
    GlanceRequest = None

SIZEAWARE_DIR = os.path.dirname(os.path.dirname(size_filter.__file__))
SIZEAWARE_FILTER = tracemalloc.Filter(True, SIZEAWARE_DIR + os.sep + '*')


class LengthSource:
    """``wsgi.input`` of a Content-Length body: preallocated blocks."""

    def __init__(self, size, blocks):
        self.remaining = size
        self._blocks = blocks

    def read(self, n=-1):
        if n is None or n < 0:
            n = self.remaining
        n = min(n, self.remaining)
        self.remaining -= n
        block = self._blocks.get(n)
        if block is None:  # not expected; charged to this file, not ours
            block = self._blocks[n] = bytes(n)
        return block


class ChunkSource:
    """``uwsgi.chunked_read()``: preallocated chunks, then ``b''``."""

    def __init__(self, size, chunk):
        self.remaining = size
        self._full = bytes(chunk)
        self._tail = bytes(size % chunk)

    def chunked_read(self, timeout=0):
        if not self.remaining:
            return b''
        block = self._full if self.remaining >= len(self._full) \
            else self._tail
        self.remaining -= len(block)
        return block


def make_drain(read_size, glance_reader):
    def drain(environ, start_response):
        if glance_reader and GlanceRequest is not None:
            body = GlanceRequest(environ).body_file
        else:
            body = webob.Request(environ).body_file
        total = 0
        while True:
            data = body.read(read_size)
            if not data:
                break
            total += len(data)
        environ['bench.received'] = total
        start_response('200 OK', [('Content-Length', '0')])
        return []
    return drain


def environ_for(size, framing, source):
    environ = {
        'REQUEST_METHOD': 'PUT',
        'SCRIPT_NAME': '',
        'PATH_INFO': '/v2/images/0e7e7c3c-1d6b-4bb8-9d8e-bench/file',
        'QUERY_STRING': '',
        'SERVER_NAME': '127.0.0.1',
        'SERVER_PORT': '9292',
        'SERVER_PROTOCOL': 'HTTP/1.1',
        'CONTENT_TYPE': 'application/octet-stream',
        'HTTP_X_OPENSTACK_IMAGE_SIZE': str(size),
        'wsgi.version': (1, 0),
        'wsgi.url_scheme': 'http',
        'wsgi.errors': sys.stderr,
        'wsgi.multithread': True,
        'wsgi.multiprocess': False,
        'wsgi.run_once': False,
    }
    if framing == 'chunked':
        environ['HTTP_TRANSFER_ENCODING'] = 'chunked'
        environ['uwsgi.version'] = b'2.0.31'
        environ['wsgi.input'] = _EmptyInput()
    else:
        environ['CONTENT_LENGTH'] = str(size)
        environ['wsgi.input'] = source
    return environ


class _EmptyInput:
    """uwsgi's wsgi.input for a chunked body: the body is not there."""

    def read(self, n=-1):
        return b''


def _sizeaware_bytes(snapshot):
    return sum(t.size for t in snapshot.filter_traces(
        [SIZEAWARE_FILTER]).traces)


def _sizeaware_live():
    """Bytes alive now that sizeaware's files allocated (fast path of
    ``_sizeaware_bytes(take_snapshot())``)."""
    total = 0
    for _domain, size, frames, *_ in tracemalloc._get_traces():
        if frames and frames[0][0].startswith(SIZEAWARE_DIR):
            total += size
    return total


class _PeakSampler:
    """Samples sizeaware's live allocations at each event of its code,
    while the body is within ``window`` bytes of its start or its end."""

    def __init__(self, size, progress, window):
        self.size = size
        self.progress = progress  # () -> bytes the source has handed out
        self.window = window
        self.peak = 0
        self.samples = 0
        # Everything traced, at sizeaware's events inside and outside the
        # windows: cheap, and shows the windows saw the worst of it.
        self.traced_inside = 0
        self.traced_outside = 0

    def sample(self):
        done = self.progress()
        traced = tracemalloc.get_traced_memory()[0]
        if self.window and self.window < done < self.size - self.window:
            self.traced_outside = max(self.traced_outside, traced)
            return
        self.traced_inside = max(self.traced_inside, traced)
        self.samples += 1
        current = _sizeaware_live()
        if current > self.peak:
            self.peak = current

    def global_trace(self, frame, event, arg):
        if frame.f_code.co_filename.startswith(SIZEAWARE_DIR):
            return self.local_trace
        return None

    def local_trace(self, frame, event, arg):
        if event in ('line', 'return'):
            self.sample()
        return self.local_trace


def run_case(size, framing, with_filter, read_size, chunk, exact,
             window=0):
    """One request through the app; a dict of figures."""
    fake_uwsgi = None
    blocks = {read_size: bytes(read_size)}
    if size % read_size:
        blocks[size % read_size] = bytes(size % read_size)
    source = LengthSource(size, blocks)
    progress = lambda: size - source.remaining  # noqa: E731
    if framing == 'chunked':
        chunks = ChunkSource(size, chunk)
        progress = lambda: size - chunks.remaining  # noqa: E731
        fake_uwsgi = types.ModuleType('uwsgi')
        fake_uwsgi.chunked_read = chunks.chunked_read
        sys.modules['uwsgi'] = fake_uwsgi
    drain = make_drain(read_size, glance_reader=not with_filter)
    app = size_filter.SizeFilter.factory({})(drain) if with_filter \
        else drain
    environ = environ_for(size, framing, source)
    statuses = []

    def start_response(status, headers, exc_info=None):
        statuses.append(status)

    sampler = _PeakSampler(size, progress, window) if exact else None
    gc.collect()
    tracemalloc.start(1)
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        started = time.perf_counter()
        if sampler:
            sys.settrace(sampler.global_trace)
        try:
            result = app(environ, start_response)
            for _ in result:
                pass
            close = getattr(result, 'close', None)
            if close:
                close()
        finally:
            sys.settrace(None)
        seconds = time.perf_counter() - started
        current, peak = tracemalloc.get_traced_memory()
        retained = _sizeaware_bytes(tracemalloc.take_snapshot())
    finally:
        tracemalloc.stop()
        if fake_uwsgi is not None:
            sys.modules.pop('uwsgi', None)
    if statuses[:1] != ['200 OK'] or environ.get('bench.received') != size:
        raise RuntimeError('%s %s: status %s, drained %s of %d' % (
            framing, with_filter, statuses, environ.get('bench.received'),
            size))
    return {
        'request_peak': peak - before,
        'sizeaware_peak': sampler.peak if sampler else None,
        'samples': sampler.samples if sampler else 0,
        'traced_inside': sampler.traced_inside - before if sampler else None,
        'traced_outside': (max(0, sampler.traced_outside - before)
                           if sampler else None),
        'retained': retained,
        'seconds': seconds,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', default='100M,1G',
                        help='body sizes (default 100M,1G)')
    parser.add_argument('--read-size', type=_common.parse_size,
                        default='64K', help='drain read size (default 64K)')
    parser.add_argument('--chunk', type=_common.parse_size, default='1M',
                        help='chunk size of a chunked body (default 1M)')
    parser.add_argument('--framing', default='content-length,chunked')
    parser.add_argument('--window', type=_common.parse_size, default='8M',
                        help='sample sizeaware\'s live memory at every '
                             'event of its code while within this many '
                             'bytes of the start or the end of the body '
                             '(default 8M; the whole body is slow)')
    args = parser.parse_args(argv)
    sizes = [_common.parse_size(s) for s in args.sizes.split(',')]
    framings = [f.strip() for f in args.framing.split(',') if f.strip()]

    rows = []
    for framing in framings:
        # One small request first, traced as the measured ones are:
        # one-time allocations (caches filled on first use; the line table
        # Python 3.11 gives a code object the first time it is traced) are
        # not what a body costs.
        for with_filter in (True, False):
            run_case(MiB, framing, with_filter, args.read_size, args.chunk,
                     exact=with_filter, window=args.window)
        for size in sizes:
            for with_filter in (True, False):
                # Pass 1: whole-request peak, undisturbed by the sampler.
                plain = run_case(size, framing, with_filter, args.read_size,
                                 args.chunk, exact=False)
                # Pass 2: sizeaware's own peak, sampled at each event.
                exact = run_case(size, framing, with_filter, args.read_size,
                                 args.chunk, exact=True,
                                 window=args.window) if with_filter \
                    else None
                _common.log('%s %s %s: %r %r' % (
                    framing, _common.human(size),
                    'with' if with_filter else 'without', plain, exact))
                rows.append([
                    framing, _common.human(size),
                    'with filter' if with_filter else 'without filter',
                    '%.1f KiB' % (exact['sizeaware_peak'] / KiB)
                    if exact else '-',
                    '%d B' % exact['retained'] if exact else '-',
                    '%.1f / %.1f KiB' % (exact['traced_inside'] / KiB,
                                         exact['traced_outside'] / KiB)
                    if exact else '-',
                    '%.1f KiB' % (plain['request_peak'] / KiB),
                    '%.2f' % plain['seconds'],
                    '%d' % exact['samples'] if exact else '-',
                ])
    print()
    print(_common.machine_line())
    print()
    print(_common.table(
        ['framing', 'body', 'app', 'sizeaware peak', 'sizeaware retained',
         'traced at events in/out', 'request peak', 's (pass 1)',
         'samples'],
        rows, title='Filter allocation (tracemalloc), reads of %s, chunks '
                    'of %s, sampling window %s; target: sizeaware peak <= '
                    '256 KiB, same for every size' % (
                        _common.human(args.read_size),
                        _common.human(args.chunk),
                        _common.human(args.window) if args.window
                        else 'whole body')))
    return 0


if __name__ == '__main__':
    sys.exit(main())

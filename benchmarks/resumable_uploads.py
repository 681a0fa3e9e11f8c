"""Resumable uploads (the ``resumable`` filter), through one Glance as
deployed: what a cut costs, what the spool costs, what parallel streams
buy on a slow link, and what the filter costs the requests it passes on.

One Glance 33 under uwsgi (2 processes of 8 threads by default) with its
database on PostgreSQL and the filesystem store. Its paste ini serves
``/...`` and ``/with/...`` through ``... context resumable sizeaware
rootapp`` and ``/without/...`` through the same pipeline without
``resumable`` (``_common.dual_paste_ini``). Uploads go through a TCP proxy
on loopback (``tests/functional/faultproxy.py``), which cuts connections,
counts the bytes clients send, and for part c delays and caps each
connection (the kernel has no netem).

(a) bytes on the wire to complete an upload cut at 10, 50 and 90 %: by
    ranged PUT (one ``Content-Range`` for the whole image, then, after the
    cut, one PUT per range the status document says is missing) and by tus
    (tuspy ``Uploader``, then a new ``Uploader(url=...)``), as a ratio to
    the image size, and the excess in bytes and in the filter's 64 KiB
    writes;
(b) throughput of a plain PUT (Content-Length), tus uploads (tuspy, in
    PATCHes of ``--tus-chunk`` and in one PATCH), a one-stream and a
    four-stream ranged upload of the same image, and the time from the
    last byte the client sent to the image being ``active``; the
    one-request uploads also through ``/through/...``, whose ``resumable``
    has ``finalize_while_receiving = true``;
(c) one ranged stream against four over a slow link (each connection
    delayed 25 ms each way and capped at 20 MiB/s);
(d) a plain PUT through ``/with`` and ``/without``: throughput and the
    workers' CPU time.

Run from the repository root with the tests venv (tuspy)::

    .stack/venvs/tests/bin/python benchmarks/resumable_uploads.py
    .stack/venvs/tests/bin/python benchmarks/resumable_uploads.py \\
        --parts b,d --size 256M --repeat 5

Not a test: nothing is asserted about timings.
"""

import argparse
import concurrent.futures
import os
import sys
import time

import _common
from _common import KiB
from _common import MiB

from sizeaware.client import connection
from tests.functional import faultproxy
from teststack import glance as glance_stack
from teststack import postgres as postgres_stack
from teststack import venvs

#: The filter's read and spool write unit (sizeaware.stream's
#: DEFAULT_READ_SIZE): what a cut can lose on the server side.
WRITE = 64 * KiB
CUTS = (0.10, 0.50, 0.90)
STREAMS = 4


class Bench:
    """The Glance, its API helper and the clients of every part."""

    def __init__(self, glance, args, image):
        self.glance = glance
        self.args = args
        self.image = image
        self.identity = glance.identity_headers('bench')
        self.api = _common.GlanceAPI(glance.url, self.identity)
        self.workers = _common.children(
            _common.read_pid(glance.workdir / 'uwsgi.pid'))
        self.pool = concurrent.futures.ThreadPoolExecutor(STREAMS)
        self.finalizing_409 = 0

    def cpu(self):
        return sum(_common.cpu_seconds(pid) for pid in self.workers)

    def check_active(self, image_id, size, prefix=''):
        info = self.api.get(image_id, prefix)
        if (info['status'], info['size']) != ('active', size):
            raise RuntimeError('image %s after upload: %s %s'
                               % (image_id, info['status'], info['size']))

    # -- clients -------------------------------------------------------

    def put_range(self, url, image_id, first, last, size, prefix=''):
        """One ranged PUT; its Result, or None when the connection broke
        before an answer."""
        headers = dict(self.identity)
        headers['Content-Type'] = 'application/octet-stream'
        headers['Content-Range'] = 'bytes %d-%d/%d' % (first, last, size)
        try:
            result = _common.upload(
                url, prefix + '/v2/images/%s/file' % image_id, self.image,
                last - first + 1, chunked=False, headers=headers,
                offset=first)
        except connection.CONNECTION_ERRORS:
            return None
        if result.status == 409 and b'is finalizing' in result.body:
            # Another stream completed the image while this one made its
            # last claim: every byte of this range was held already (its
            # checkpoints claimed them), and the other stream's answer
            # is Glance's. Counted, and the image is checked afterwards.
            self.finalizing_409 += 1
            return result
        if result.status not in (204, 201):
            raise RuntimeError('ranged PUT %d-%d: %r' % (first, last,
                                                          result))
        return result

    def put_streams(self, url, image_id, size, streams, prefix=''):
        """``size`` bytes in ``streams`` ranges, each on its own
        connection, at once."""
        bounds = [size * i // streams for i in range(streams + 1)]
        futures = [self.pool.submit(self.put_range, url, image_id,
                                    bounds[i], bounds[i + 1] - 1, size,
                                    prefix)
                   for i in range(streams)]
        results = [future.result() for future in futures]
        if None in results:
            raise RuntimeError('a ranged PUT lost its connection')

    def session(self, image_id):
        status, body = _common.request(
            self.glance.url, 'GET', '/v2/images/%s/file/session' % image_id,
            headers=self.identity)
        if status != 200:
            raise RuntimeError('session status: %s %r' % (status, body))
        return body

    def tus_client(self, url, image_id, prefix=''):
        from tusclient import client as tus_client
        return tus_client.TusClient('%s%s/v2/images/%s/file' % (
            url, prefix, image_id), headers=dict(self.identity))

    def tus_upload(self, url, image_id, resume_url=None, prefix='',
                   chunk_size=None):
        tus = self.tus_client(url, image_id, prefix)
        uploader = tus.uploader(file_path=str(self.image), url=resume_url,
                                chunk_size=chunk_size or self.args.tus_chunk)
        # With ``url`` tuspy's HEAD has given the offset the server kept.
        self.tus_offset = uploader.offset
        try:
            uploader.upload()
        except Exception:  # tuspy raises its own and requests' errors
            return uploader, False
        return uploader, True

    def plain_put(self, url, image_id, size, prefix=''):
        result = _common.upload(
            url, prefix + '/v2/images/%s/file' % image_id, self.image, size,
            chunked=False,
            headers=dict(self.identity, **{
                'Content-Type': 'application/octet-stream',
                'X-OpenStack-Image-Size': str(size)}))
        if result.status != 204:
            raise RuntimeError('plain PUT: %r' % result)

    # -- part a --------------------------------------------------------

    def cut_and_resume(self, proxy, protocol, fraction):
        size = self.args.size
        image_id = self.api.create()
        try:
            proxy.reset_counters()
            cut = int(size * fraction)
            proxy.cut_at(cut)
            if protocol == 'ranged':
                if self.put_range(proxy.url, image_id, 0, size - 1,
                                  size) is not None:
                    raise RuntimeError('the cut did not break the PUT')
                # The cut request is being wound up on the server while
                # its phase reads ``transferring``: what it keeps is known
                # once the session is ``paused``.
                settle = time.perf_counter()
                status = self.session(image_id)
                while status['phase'] == 'transferring':
                    if time.perf_counter() - settle > 60:
                        raise RuntimeError('session still transferring')
                    time.sleep(0.05)
                    status = self.session(image_id)
                settle = time.perf_counter() - settle
                kept = status['bytes_held']
                requests = 1
                held = [(a, b) for a, b in status['ranges_held']]
                for first, last in missing(held, size):
                    requests += 1
                    if self.put_range(proxy.url, image_id, first, last,
                                      size) is None:
                        raise RuntimeError('resumed PUT broke')
            else:
                uploader, done = self.tus_upload(proxy.url, image_id)
                if done:
                    raise RuntimeError('the cut did not break tus')
                uploader, done = self.tus_upload(proxy.url, image_id,
                                                 resume_url=uploader.url)
                kept = self.tus_offset
                if not done:
                    raise RuntimeError('tus resume failed')
                requests = settle = None
            if not proxy.cut.is_set():
                raise RuntimeError('the proxy did not cut')
            self.check_active(image_id, size)
            return {'sent': proxy.received, 'forwarded_at_cut': cut,
                    'kept': kept, 'requests': requests, 'settle': settle}
        finally:
            self.api.delete(image_id)

    # -- parts b and c -------------------------------------------------

    def timed(self, proxy, mode, streams=1, prefix='', whole=False):
        """One upload through ``proxy``: (seconds, last byte to active,
        workers' CPU seconds); tus in one PATCH when ``whole``."""
        size = self.args.wan_size if proxy.rate else self.args.size
        image_id = self.api.create()
        try:
            proxy.reset_counters()
            self.finalizing_409 = 0
            cpu = self.cpu()
            start = time.perf_counter()
            if mode == 'plain':
                self.plain_put(proxy.url, image_id, size)
            elif mode == 'tus':
                _, done = self.tus_upload(proxy.url, image_id, prefix=prefix,
                                          chunk_size=size if whole else None)
                if not done:
                    raise RuntimeError('tus upload failed')
            else:
                self.put_streams(proxy.url, image_id, size, streams, prefix)
            end = time.perf_counter()
            self.check_active(image_id, size)
            active = time.perf_counter()
            cpu = self.cpu() - cpu
            return (end - start, active - proxy.last_received, cpu,
                    self.finalizing_409)
        finally:
            self.api.delete(image_id)

    # -- part d --------------------------------------------------------

    def passed_on(self, prefix):
        size = self.args.size
        image_id = self.api.create(prefix)
        try:
            cpu = self.cpu()
            start = time.perf_counter()
            self.plain_put(self.glance.url, image_id, size, prefix)
            seconds = time.perf_counter() - start
            cpu = self.cpu() - cpu
            self.check_active(image_id, size, prefix)
            return seconds, cpu
        finally:
            self.api.delete(image_id, prefix)


def missing(held, size):
    """The ``[first, last]`` ranges of ``0..size-1`` not in ``held``."""
    gaps, at = [], 0
    for first, last in sorted(held):
        if first > at:
            gaps.append((at, first - 1))
        at = max(at, last + 1)
    if at < size:
        gaps.append((at, size - 1))
    return gaps


#: The prefix of the pipeline whose ``resumable`` finalizes while the
#: request completing an image arrives.
THROUGH = '/through'
#: ``(mode, streams, label, options of Bench.timed)``.
B_MODES = (('plain', 1, 'plain PUT, Content-Length', {}),
           ('tus', 1, 'tus (tuspy), PATCHes of --tus-chunk', {}),
           ('tus', 1, 'tus (tuspy), 1 PATCH', {'whole': True}),
           ('ranged', 1, 'ranged PUT, 1 stream', {}),
           ('ranged', STREAMS, 'ranged PUT, %d streams' % STREAMS, {}),
           ('tus', 1, 'tus, 1 PATCH, finalize while receiving',
            {'whole': True, 'prefix': THROUGH}),
           ('ranged', 1, 'ranged PUT, 1 stream, finalize while receiving',
            {'prefix': THROUGH}))
C_MODES = (('ranged', 1, 'ranged PUT, 1 stream', {}),
           ('ranged', STREAMS, 'ranged PUT, %d streams' % STREAMS, {}))


def with_through_pipeline(text, spool_dir):
    """``text`` (a dual paste ini) plus ``/through/...``: the ``api``
    pipeline with ``resumable`` finalizing while receiving."""
    sections = glance_stack.split_sections(text)
    api = dict(sections)['composite:api']
    root = 'composite:glance-api-%s' % glance_stack.TEST_FLAVOR
    out = []
    for name, lines in sections:
        if name == root:
            lines = [line for line in lines if line.strip()] + [
                '%s: api-through' % THROUGH, '']
        out.extend(lines)
    through = [line.replace(' resumable ', ' resumable-through ')
               for line in api[1:]]
    out += ['', '[composite:api-through]'] + through + [
        '', '[filter:resumable-through]', 'use = egg:sizeaware#resumable',
        'spool_dir = %s' % spool_dir, 'finalize_while_receiving = true', '']
    return '\n'.join(out)


def run(args, image):
    venv = venvs.glance_venv(args.release)
    postgres = postgres_stack.Postgres()
    glance = None
    results = {'a': [], 'b': {}, 'c': {}, 'd': {}}
    loads = []
    postgres.start()
    try:
        glance = glance_stack.Glance(
            args.release, resumable={}, processes=args.processes,
            threads=args.threads,
            database_url=postgres.create_database('bench_resumable'),
            extra_conf={'DEFAULT': {'debug': False}})
        glance.paste_ini = with_through_pipeline(_common.dual_paste_ini(
            venv, resumable={'spool_dir': str(glance.spool_dir)}),
            glance.spool_dir)
        glance.start()
        bench = Bench(glance, args, image)
        target = ('127.0.0.1', glance.port)
        if 'd' in args.parts or 'b' in args.parts:
            for prefix in ('/with', '/without'):  # warm up both pipelines
                bench.passed_on(prefix)
        if 'a' in args.parts:
            with faultproxy.FaultProxy(target) as proxy:
                for _ in range(args.cut_repeat):
                    for protocol in ('ranged', 'tus'):
                        for fraction in CUTS:
                            loads.append(os.getloadavg()[0])
                            row = bench.cut_and_resume(proxy, protocol,
                                                       fraction)
                            row.update(protocol=protocol, fraction=fraction)
                            results['a'].append(row)
                            _common.log(
                                '(a) %-6s cut at %2d %%: %d bytes sent, '
                                'ratio %.5f' % (
                                    protocol, fraction * 100, row['sent'],
                                    row['sent'] / args.size))
        for part, modes, options in (
                ('b', B_MODES, {}),
                ('c', C_MODES, {'latency': args.latency,
                                'rate': args.rate})):
            if part not in args.parts:
                continue
            with faultproxy.FaultProxy(target, **options) as proxy:
                for round_no in range(args.repeat):
                    order = modes if round_no % 2 == 0 else modes[::-1]
                    for mode, streams, label, timed in order:
                        loads.append(os.getloadavg()[0])
                        seconds, tail, cpu, conflicts = bench.timed(
                            proxy, mode, streams, **timed)
                        results[part].setdefault(label, []).append(
                            (seconds, tail, cpu, conflicts))
                        _common.log('(%s) round %d, %-26s %6.2f s, last '
                                    'byte to active %.2f s, CPU %.2f s '
                                    '(load %.1f)' % (
                                        part, round_no + 1, label, seconds,
                                        tail, cpu, loads[-1]))
        if 'd' in args.parts:
            for round_no in range(args.repeat):
                order = (('with', 'without') if round_no % 2 == 0
                         else ('without', 'with'))
                for mode in order:
                    loads.append(os.getloadavg()[0])
                    seconds, cpu = bench.passed_on('/' + mode)
                    results['d'].setdefault(mode, []).append((seconds, cpu))
                    _common.log('(d) round %d, %-7s %6.2f s, CPU %.2f s '
                                '(load %.1f)' % (round_no + 1, mode,
                                                 seconds, cpu, loads[-1]))
        bench.pool.shutdown()
    finally:
        if glance is not None:
            glance.stop()
        postgres.stop()
    return results, loads


# ---------------------------------------------------------------------------
# Tables


def table_a(args, rows):
    size = args.size
    out = []
    for row in rows:
        excess = row['sent'] - size
        allowed = 0.001 * size + WRITE
        out.append([
            row['protocol'], '%d %%' % (row['fraction'] * 100),
            row['sent'], '%.5f' % (row['sent'] / size), excess,
            '%.2f' % (excess / WRITE),
            '-' if row['kept'] is None else
            row['forwarded_at_cut'] - row['kept'],
            '-' if row['requests'] is None else row['requests'],
            '-' if row['settle'] is None else '%.2f' % row['settle'],
            'yes' if excess <= allowed else 'NO'])
    return _common.table(
        ['protocol', 'cut at', 'bytes sent', 'ratio', 'excess B',
         'excess writes', 'cut lost B', 'PUTs', 'paused after s',
         '<= 1.001 + 1 write'],
        out, title=(
            '(a) bytes the client sent (counted by the proxy, request lines '
            'and headers included) to complete a %s upload cut once by the '
            'proxy; ratio = bytes sent / image size; excess = bytes sent - '
            'image size, also in the filter\'s %d KiB writes; cut lost = '
            'bytes forwarded before the cut that the session did not keep '
            '(ranged: from the status document, read once the session is '
            'paused; paused after: from the client\'s broken PUT to that '
            'read; tus: from '
            'tuspy\'s HEAD); tus chunks of %s'
            % (_common.human(size), WRITE // KiB,
               _common.human(args.tus_chunk))))


def table_b(args, results):
    base = results['plain PUT, Content-Length']
    base_mibps = _common.median([args.size / MiB / s for s, *_ in base])
    rows = []
    for _, streams, label, _ in B_MODES:
        runs = results[label]
        mibps = _common.median([args.size / MiB / s for s, *_ in runs])
        paired = _common.median([b[0] / r[0] for r, b in zip(runs, base)])
        rows.append([
            label, '%.0f' % mibps, '%.3f' % (mibps / base_mibps),
            '%.3f' % paired,
            '-' if 'plain' in label or streams > 1 else (
                'yes' if min(mibps / base_mibps, paired) >= 0.85 else 'NO'),
            '%.2f' % _common.median([t for _, t, *_ in runs]),
            '%.2f' % _common.median([c for _, _, c, _ in runs]),
            sum(r[3] for r in runs),
            ' '.join('%.1f' % s for s, *_ in runs)])
    return _common.table(
        ['upload', 'MiB/s', 'vs plain', 'paired', '>= 0.85',
         'last byte to active s',
         'workers CPU s', '409s', 'rounds (s)'],
        rows, title=(
            '(b) %s image through the proxy (no faults), %d rounds, medians; '
            'vs plain = throughput / the plain PUT\'s (paired: median of the '
            'per-round ratios); last byte to active: from the proxy\'s last '
            'read from the client to a GET answering active; workers CPU: '
            'both uwsgi workers\' user+system time per upload; 409s: '
            'streams answered 409 "finalizing" although their bytes were '
            'held (all rounds)'
            % (_common.human(args.size), args.repeat)))


def table_c(args, results):
    one = results[C_MODES[0][2]]
    base = _common.median([s for s, *_ in one])
    rows = []
    for _, streams, label, _ in C_MODES:
        runs = results[label]
        seconds = _common.median([s for s, *_ in runs])
        speedup = base / seconds
        paired = _common.median([a[0] / r[0] for r, a in zip(runs, one)])
        rows.append([
            label, '%.1f' % seconds, '%.1f' % (args.wan_size / MiB / seconds),
            '%.2f' % speedup, '%.2f' % paired,
            '-' if streams == 1 else ('yes' if min(speedup, paired) >= 2.5
                                      else 'NO'),
            '%.2f' % _common.median([t for _, t, *_ in runs]),
            sum(r[3] for r in runs),
            ' '.join('%.1f' % s for s, *_ in runs)])
    return _common.table(
        ['upload', 's', 'MiB/s', 'speed-up', 'paired', '>= 2.5',
         'last byte to active s', '409s', 'rounds (s)'],
        rows, title=(
            '(c) %s image over an emulated WAN (the proxy delays each '
            'connection %d ms each way and caps it at %s/s), %d rounds, '
            'medians; speed-up = time of one stream / time'
            % (_common.human(args.wan_size), args.latency * 1000,
               _common.human(args.rate), args.repeat)))


def table_d(args, results):
    runs = results
    mibps = {m: _common.median([args.size / MiB / s for s, _ in runs[m]])
             for m in runs}
    paired = _common.median([w[0] and o[0] / w[0] for w, o in
                             zip(runs['with'], runs['without'])])
    cpu = {m: _common.median([c for _, c in runs[m]]) for m in runs}
    ratio = mibps['with'] / mibps['without']
    rows = [[
        '%.0f' % mibps['without'], '%.0f' % mibps['with'], '%.3f' % ratio,
        '%.3f' % paired, 'yes' if min(ratio, paired) >= 0.99 else 'NO',
        '%.2f' % cpu['without'], '%.2f' % cpu['with'],
        '%.3f' % (cpu['without'] / cpu['with']),
        ' '.join('%.0f' % (args.size / MiB / s) for s, _ in runs['without']),
        ' '.join('%.0f' % (args.size / MiB / s) for s, _ in runs['with'])]]
    return _common.table(
        ['MiB/s without', 'MiB/s with', 'ratio', 'paired', '>= 0.99',
         'CPU s without', 'CPU s with', 'CPU ratio',
         'rounds without (MiB/s)', 'rounds with (MiB/s)'],
        rows, title=(
            '(d) plain PUT (Content-Length, with the header) of %s, no proxy, '
            'through the pipeline with and without resumable (sizeaware in '
            'both), %d rounds, medians; ratio = with / without (paired: '
            'median of the per-round ratios); CPU: both workers\' '
            'user+system time per upload, ratio without / with'
            % (_common.human(args.size), args.repeat)))


def report(args, results, loads):
    tables = []
    if results['a']:
        tables.append(table_a(args, results['a']))
    if results['b']:
        tables.append(table_b(args, results['b']))
    if results['c']:
        tables.append(table_c(args, results['c']))
    if results['d']:
        tables.append(table_d(args, results['d']))
    tables.append('Glance %s under uwsgi (%d processes x %d threads), '
                  'PostgreSQL, filesystem store, resumable and sizeaware '
                  'filters; load average %.1f to %.1f during the run'
                  % (args.release, args.processes, args.threads,
                     min(loads), max(loads)))
    return tables


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    _common.add_upload_options(parser, 3, 'rounds of parts b, c and d')
    parser.add_argument('--parts', default='a,b,c,d',
                        help='which parts (default a,b,c,d)')
    parser.add_argument('--cut-repeat', type=int, default=1,
                        help='rounds of part a (default 1)')
    parser.add_argument('--tus-chunk', type=_common.parse_size,
                        default='64M', help='tuspy chunk size (default 64M)')
    parser.add_argument('--wan-size', type=_common.parse_size,
                        default='256M', help='image of part c (default 256M)')
    parser.add_argument('--latency', type=float, default=0.025,
                        help='part c: delay each way, seconds (default '
                             '0.025)')
    parser.add_argument('--rate', type=_common.parse_size, default='20M',
                        help='part c: bytes per second per connection and '
                             'direction (default 20M)')
    _common.add_glance_options(parser)
    args = parser.parse_args(argv)
    args.parts = set(p.strip() for p in args.parts.split(',') if p.strip())
    image = _common.image_file(args.size, args.image)
    if 'c' in args.parts and args.wan_size > args.size:
        parser.error('--wan-size must not exceed --size')
    started = time.perf_counter()
    results, loads = run(args, image)
    _common.log('done in %.0f s' % (time.perf_counter() - started))
    _common.print_tables(report(args, results, loads))
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Store-native resumable uploads into RBD against spooled ones and a
plain PUT, through one Glance with its RBD backend on a throwaway Ceph.

One Glance 33 under uwsgi (2 processes of 8 threads by default), its
database on PostgreSQL (``teststack.postgres``), its only backend
``ceph`` on the RBD pool ``images`` of a one-node Ceph
(``teststack.ceph.RadosGW``). Its paste ini has two pipelines that differ
only in the ``resumable`` filter's ``session_storage``: ``/...`` has
``session_storage = store`` (the default: each range is written into the
RBD image ``<image_id>`` of the pool, and the last byte hands Glance only
its location), ``/spool/...`` has ``session_storage = spool`` (the bytes
go to a spool directory on the API node and are copied into the store
through Glance at the end). One server, one database, one pool for both.

Uploads, at each ``--sizes`` (parts a to c come from the same uploads):

(a) throughput of a plain PUT (Content-Length) against, through each
    pipeline, a ranged upload in one stream of 8 MiB requests (as the
    ``sizeaware`` client sends them, each with its ``Content-Digest``), a
    ranged upload in one request for the whole image, four streams of
    8 MiB requests at once (each a contiguous quarter), and tus (tuspy,
    8 MiB PATCHes), as a ratio to the plain PUT;
(b) the time from the client's last byte (the proxy's last read from the
    client) to a GET answering ``active``;
(c) the bytes the uwsgi processes (master and workers) wrote to the local
    disk (``write_bytes`` of ``/proc/<pid>/io``, read before and after each
    upload), per GiB uploaded;

and for store-native uploads the time from ``active`` to Glance's
``os_hash_value`` (its location import hashes the image after activating
it). Every image is checked against the file (``os_hash_value``) and
deleted, and the pool is checked empty.

(d) one stream against four over an emulated slow link (each connection
    delayed 25 ms each way and capped at 20 MiB/s by the proxy, as
    ``resumable_uploads.py`` part c), store-native: in 8 MiB requests, and
    in one request per stream.

Every upload goes through the TCP proxy of
``tests/functional/faultproxy.py`` on loopback (without delay or cap for
parts a to c), which notes the time of the last byte it read from the
client. Run from the repository root with the tests venv (tuspy)::

    .stack/venvs/tests/bin/python benchmarks/store_native.py
    .stack/venvs/tests/bin/python benchmarks/store_native.py \\
        --sizes 1G,4G --repeat 3

Not a test: nothing is asserted about timings.
"""

import argparse
import concurrent.futures
import contextlib
import datetime
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import time

import _common
from _common import GiB
from _common import MiB

from sizeaware.client import connection
from sizeaware.client import errors
from sizeaware.client import readers
from sizeaware.client import spans
from sizeaware.client import upload as client_upload
from tests.functional import faultproxy
from teststack import ceph as ceph_stack
from teststack import glance as glance_stack
from teststack import postgres as postgres_stack
from teststack import venvs

#: The prefix of the pipeline whose ``resumable`` spools.
SPOOL = '/spool'
PREFIX = {'store': '', 'spool': SPOOL, None: ''}
BACKEND = 'ceph'
#: A project user, as uploads come (the location request carries the
#: service role the filter adds where identity comes from headers).
ROLES = ('member', 'reader')
#: What a session may take after its last byte before Glance answers
#: ``active`` (the filter's own wait for Glance is 60 s).
ACTIVE_TIMEOUT = 900
HASH_TIMEOUT = 900

#: The ``sizeaware`` client's ranged PUT: 8 MiB at most, ending on
#: multiples of 8 MiB; streams of a parallel upload; tuspy's PATCHes.
REQUEST = client_upload.REQUEST_BYTES
STREAMS = 4
TUS_CHUNK = 8 * MiB
#: ``(mode, storage, label)``; mode: ``plain``, ``pieces`` (one stream of
#: REQUEST requests), ``whole`` (one ranged request), ``streams``
#: (STREAMS streams of REQUEST requests), ``tus``.
MODES = (('plain', None, 'plain PUT, Content-Length'),
         ('pieces', 'store', 'ranged, 1 stream, 8 MiB requests'),
         ('whole', 'store', 'ranged, 1 request'),
         ('streams', 'store', 'ranged, 4 streams, 8 MiB requests'),
         ('tus', 'store', 'tus (tuspy), 8 MiB PATCHes'),
         ('pieces', 'spool', 'ranged, 1 stream, 8 MiB requests'),
         ('whole', 'spool', 'ranged, 1 request'),
         ('streams', 'spool', 'ranged, 4 streams, 8 MiB requests'),
         ('tus', 'spool', 'tus (tuspy), 8 MiB PATCHes'))
#: Part d: ``(mode, streams, label)``, store-native.
WAN_MODES = (('pieces', 1, 'ranged, 1 stream, 8 MiB requests'),
             ('pieces', 4, 'ranged, 4 streams, 8 MiB requests'),
             ('whole', 1, 'ranged, 1 stream, 1 request'),
             ('whole', 4, 'ranged, 4 streams, 1 request each'))


def key(mode, storage):
    return '%s/%s' % (storage or '-', mode)


def sha512_of(path):
    digest = hashlib.sha512()
    with open(path, 'rb') as f:
        while piece := f.read(8 * MiB):
            digest.update(piece)
    return digest.hexdigest()


class Bench:
    """The Glance, the pool, and the clients of every part."""

    def __init__(self, glance, pool, args):
        self.glance = glance
        self.pool = pool
        self.args = args
        self.identity = glance.identity_headers('bench', roles=ROLES)
        self.api = _common.GlanceAPI(glance.url, self.identity)
        self.master = _common.read_pid(glance.workdir / 'uwsgi.pid')
        self.threads = concurrent.futures.ThreadPoolExecutor(
            STREAMS)
        self.finalizing_409 = 0
        self.leftovers = []
        self.log_offset = 0
        self.delete_retries = 0

    # -- the uwsgi processes -------------------------------------------

    def processes(self):
        return [self.master] + _common.children(self.master)

    def io(self):
        """``({pid: (write_bytes, cancelled)}, CPU seconds of the
        workers)``."""
        pids = self.processes()
        counts = {}
        for pid in pids:
            io = _common.proc_io(pid)
            counts[pid] = (io['write_bytes'], io['cancelled_write_bytes'])
        return counts, sum(_common.cpu_seconds(p) for p in pids[1:])

    # -- clients -------------------------------------------------------

    def put_range(self, url, image_id, image, first, last, size, prefix,
                  digest=None):
        headers = dict(self.identity)
        headers['Content-Type'] = 'application/octet-stream'
        headers['Content-Range'] = 'bytes %d-%d/%d' % (first, last, size)
        if digest is not None:
            headers['Content-Digest'] = client_upload.content_digest(digest)
        try:
            result = _common.upload(
                url, prefix + '/v2/images/%s/file' % image_id, image,
                last - first + 1, chunked=False, headers=headers,
                offset=first)
        except connection.CONNECTION_ERRORS as exc:
            raise RuntimeError('ranged PUT %d-%d: %r' % (first, last, exc))
        if result.status == 409 and b'is finalizing' in result.body:
            # Another stream completed the image while this one made its
            # last claim: its bytes were held already (see
            # resumable_uploads.py). Counted; the image is checked after.
            self.finalizing_409 += 1
            return result
        if result.status not in (204, 201):
            raise RuntimeError('ranged PUT %d-%d: %r' % (first, last,
                                                          result))
        return result

    def put_span(self, url, image_id, image, size, start, stop, prefix,
                 pieces=True):
        """Bytes ``[start, stop)``: in requests of at most --request-size
        ending on its multiples, each with its CRC-32C as
        ``Content-Digest`` (the ``sizeaware`` client's requests), or in
        one request."""
        if not pieces:
            self.put_range(url, image_id, image, start, stop - 1, size,
                           prefix)
            return
        step = REQUEST
        with open(image, 'rb', buffering=0) as src:
            position = start
            while position < stop:
                end = min(stop, (position // step + 1) * step)
                digest = readers.digest_of(src.fileno(), position, end,
                                           client_upload.REQUEST_DIGEST)
                self.put_range(url, image_id, image, position, end - 1,
                               size, prefix, digest)
                position = end

    def put_streams(self, url, image_id, image, size, streams, prefix,
                    pieces=True):
        """``streams`` contiguous spans (cut as the client cuts them), one
        stream each, at once."""
        work = spans.split([(0, size)], streams, REQUEST)
        futures = [self.threads.submit(self.put_span, url, image_id, image,
                                       size, a, b, prefix, pieces)
                   for a, b in work]
        for future in futures:
            future.result()

    def tus_upload(self, url, image_id, image, prefix):
        from tusclient import client as tus_client
        tus = tus_client.TusClient('%s%s/v2/images/%s/file' % (
            url, prefix, image_id), headers=dict(self.identity))
        tus.uploader(file_path=str(image),
                     chunk_size=TUS_CHUNK).upload()

    def plain_put(self, url, image_id, image, size):
        result = _common.upload(
            url, '/v2/images/%s/file' % image_id, image, size,
            chunked=False, headers=dict(self.identity, **{
                'Content-Type': 'application/octet-stream',
                'X-OpenStack-Image-Size': str(size)}))
        if result.status != 204:
            raise RuntimeError('plain PUT: %r' % result)

    # -- one upload ----------------------------------------------------

    def session_marks(self, image_id):
        """``{phase: wall time}`` of the filter's log lines for the image's
        session since the last call (``finalizing``, ``finished_success``),
        read from Glance's log."""
        marks = {}
        with open(self.glance.log_path, 'rb') as log:
            log.seek(self.log_offset)
            text = log.read()
            self.log_offset += len(text)
        for line in text.decode(errors='replace').splitlines():
            if 'image_id=%s' % image_id not in line:
                continue
            for phase in ('finalizing', 'finished_success'):
                if 'Upload session %s:' % phase in line:
                    with contextlib.suppress(ValueError):
                        marks[phase] = datetime.datetime.strptime(
                            line[:23], '%Y-%m-%d %H:%M:%S.%f').timestamp()
        return marks

    def wait_active(self, image_id, size):
        deadline = time.monotonic() + ACTIVE_TIMEOUT
        while True:
            info = self.api.get(image_id)
            if info['status'] == 'active':
                if info['size'] != size:
                    raise RuntimeError('image %s active with size %s'
                                       % (image_id, info['size']))
                return info, time.perf_counter()
            if (info['status'] not in ('queued', 'saving', 'importing')
                    or time.monotonic() > deadline):
                raise RuntimeError('image %s after upload: %s'
                                   % (image_id, info['status']))
            time.sleep(0.05)

    def wait_hashed(self, image_id, info):
        deadline = time.monotonic() + HASH_TIMEOUT
        while not (info.get('os_hash_value') and info.get('checksum')):
            if time.monotonic() > deadline:
                raise RuntimeError('image %s: no os_hash_value after %d s'
                                   % (image_id, HASH_TIMEOUT))
            time.sleep(0.1)
            info = self.api.get(image_id)
        return info, time.perf_counter()

    def delete(self, image_id):
        """Delete the image, again after a 500: Glance 33 answers a delete
        500 ("Operation file ... does not exist, cannot cancel") in the
        moment between its hashing task saving the hashes and dropping
        the task's marks from the image (it tries to cancel the task
        that has just ended)."""
        for attempt in range(20):
            try:
                self.api.delete(image_id)
                return
            except errors.Transient as exc:
                if attempt == 19:
                    raise
                self.delete_retries += 1
                _common.log('delete %s: %s; again' % (image_id, exc))
                time.sleep(0.5)

    def timed(self, proxy, mode, storage, image, size, expected,
              streams=None):
        """One upload through ``proxy``; a dict of its figures."""
        prefix = PREFIX[storage]
        image_id = self.api.create()
        try:
            proxy.reset_counters()
            self.finalizing_409 = 0
            io_before, cpu = self.io()
            start = time.perf_counter()
            if mode == 'plain':
                self.plain_put(proxy.url, image_id, image, size)
            elif mode == 'tus':
                self.tus_upload(proxy.url, image_id, image, prefix)
            else:
                self.put_streams(proxy.url, image_id, image, size,
                                 streams or (STREAMS if mode == 'streams'
                                             else 1),
                                 prefix, pieces=mode != 'whole')
            end = time.perf_counter()
            info, active = self.wait_active(image_id, size)
            # The proxy's clock is perf_counter; the log's is the wall's.
            last_byte = time.time() - (time.perf_counter()
                                       - proxy.last_received)
            info, hashed = self.wait_hashed(image_id, info)
            io_after, cpu_after = self.io()
            if info['os_hash_value'] != expected:
                raise RuntimeError('image %s: os_hash_value %s is not the '
                                   'file\'s' % (image_id,
                                                info['os_hash_value']))
            if info.get('stores') != BACKEND:
                raise RuntimeError('image %s in stores %r'
                                   % (image_id, info.get('stores')))
            if io_before.keys() != io_after.keys():
                _common.log('uwsgi processes changed during the upload: '
                            '%s -> %s' % (sorted(io_before),
                                          sorted(io_after)))
            marks = self.session_marks(image_id)
            written = cancelled = 0
            for pid in io_before.keys() & io_after.keys():
                written += io_after[pid][0] - io_before[pid][0]
                cancelled += io_after[pid][1] - io_before[pid][1]
            return {'seconds': end - start,
                    'tail': active - proxy.last_received,
                    'hash': hashed - active,
                    'cpu': cpu_after - cpu,
                    'written': written, 'cancelled': cancelled,
                    'conflicts': self.finalizing_409,
                    'to_finalize': marks['finalizing'] - last_byte
                    if 'finalizing' in marks else None,
                    'finalize': marks['finished_success'] - marks['finalizing']
                    if len(marks) == 2 else None}
        finally:
            self.delete(image_id)
            left = self.pool.images()
            if left:
                self.leftovers.append((image_id, left))
                _common.log('images left in the pool after delete: %r'
                            % left)


def glance_ceph_conf(pool, path, quiet=True, options=()):
    """A copy of the cluster's ``ceph.conf`` at ``path`` for Glance.

    With ``quiet``, the section of the pool's client has no ``debug_rbd``
    and no ``log_file`` of its own: ``teststack.ceph`` has librbd log every
    operation at level 5, which a deployment does not, and those lines are
    written by the uwsgi processes (part c) at a cost in CPU that grows
    with the number of librbd calls. ``options`` (``name=value``) are
    added to that section.
    """
    section = '[client.%s]' % pool.user
    out, inside = [], False
    for line in pool.conf_path.read_text().splitlines():
        if line.startswith('['):
            if inside:
                out += list(options)
            inside = line.strip() == section
        elif quiet and inside and line.split('=', 1)[0].strip() in (
                'debug_rbd', 'log_file'):
            continue
        out.append(line)
    if inside:
        out += list(options)
    path.write_text('\n'.join(out) + '\n')
    return path


def storage_paste_ini(venv, store_spool, spool_spool):
    """The paste ini ``teststack.glance`` derives (``resumable`` with
    ``session_storage = store``), plus ``/spool/...``: the same ``api``
    pipeline whose ``resumable`` has ``session_storage = spool``."""
    shipped = glance_stack.shipped_paste_ini(venv).read_text()
    text = glance_stack.build_paste_ini(shipped, with_filter=True, resumable={
        'spool_dir': store_spool, 'session_storage': 'store'})
    sections = glance_stack.split_sections(text)
    api = dict(sections)['composite:api']
    root = 'composite:glance-api-%s' % glance_stack.TEST_FLAVOR
    out = []
    for name, lines in sections:
        if name == root:
            lines = [line for line in lines if line.strip()] + [
                '%s: api-spool' % SPOOL, '']
        out.extend(lines)
    spooled = [line.replace(' resumable ', ' resumable-spool ')
               for line in api[1:]]
    if not any('resumable-spool' in line for line in spooled):
        raise RuntimeError('no resumable filter in [composite:api]')
    out += ['', '[composite:api-spool]'] + spooled + [
        '', '[filter:resumable-spool]', 'use = egg:sizeaware#resumable',
        'spool_dir = %s' % spool_spool, 'session_storage = spool', '']
    return '\n'.join(out)


def run(args):
    images = {size: _common.image_file(size) for size in args.sizes}
    if 'd' in args.parts:
        images.setdefault(args.wan_size, _common.image_file(args.wan_size))
    _common.log('hashing the image files')
    expected = {size: sha512_of(path) for size, path in images.items()}
    venv = venvs.glance_venv(args.release)
    postgres = postgres_stack.Postgres()
    ceph = ceph_stack.RadosGW()
    glance = None
    results = {'main': {}, 'wan': {}}
    loads = [os.getloadavg()[0]]
    postgres.start()
    try:
        started = time.perf_counter()
        ceph.start()
        pool = ceph.add_rbd_pool('images', user='glance')
        _common.log('Ceph up in %.0f s' % (time.perf_counter() - started))
        conf_path = glance_ceph_conf(pool, ceph.workdir / 'glance-ceph.conf',
                                     not args.rbd_debug, args.rbd_option)
        glance = glance_stack.Glance(
            args.release, resumable={}, processes=args.processes,
            threads=args.threads,
            database_url=postgres.create_database('bench_store_native'),
            default_backend=BACKEND,
            backends={BACKEND: ('rbd', {
                'rbd_store_pool': pool.name,
                'rbd_store_user': pool.user,
                'rbd_store_ceph_conf': conf_path,
                'rbd_store_chunk_size': 8})},
            policy={'add_image_location': '',
                    'context_is_admin': 'role:admin'},
            extra_conf={'DEFAULT': {'debug': args.debug}},
            uwsgi_options={'pythonpath': args.sizeaware_from}
            if args.sizeaware_from else None)
        spool_spool = glance.workdir / 'spool-spooled'
        glance.paste_ini = storage_paste_ini(venv, glance.spool_dir,
                                             spool_spool)
        glance.start()
        bench = Bench(glance, pool, args)
        target = ('127.0.0.1', glance.port)
        try:
            if args.parts & {'a', 'b', 'c'}:
                with faultproxy.FaultProxy(target) as proxy:
                    # Warm up: both pipelines, each worker's cluster
                    # connection, Glance's driver.
                    small = min(images)
                    for mode, storage, _ in MODES:
                        if mode in ('pieces', 'plain'):
                            bench.timed(proxy, mode, storage, images[small],
                                        small, expected[small])
                    for size in args.sizes:
                        main_rounds(args, bench, proxy, size, images[size],
                                    expected[size], results['main'], loads)
            if 'd' in args.parts:
                with faultproxy.FaultProxy(target, latency=args.latency,
                                           rate=args.rate) as proxy:
                    size = args.wan_size
                    for round_no in range(args.wan_repeat):
                        order = (WAN_MODES if round_no % 2 == 0
                                 else WAN_MODES[::-1])
                        for mode, streams, label in order:
                            loads.append(os.getloadavg()[0])
                            row = bench.timed(proxy, mode, 'store',
                                              images[size], size,
                                              expected[size], streams)
                            results['wan'].setdefault(label, []).append(row)
                            _common.log(
                                '(d) round %d, %-36s %6.2f s, last byte '
                                'to active %.2f s (load %.1f)' % (
                                    round_no + 1, label, row['seconds'],
                                    row['tail'], loads[-1]))
        finally:
            bench.threads.shutdown()
            if args.keep_logs:
                keep = pathlib.Path(args.keep_logs)
                keep.mkdir(parents=True, exist_ok=True)
                for path in glance.logs():
                    if path.exists():
                        shutil.copy(path, keep / path.name)
        results['leftovers'] = bench.leftovers
        results['delete_retries'] = bench.delete_retries
    finally:
        if glance is not None:
            glance.stop()
        ceph.stop()
        postgres.stop()
    loads.append(os.getloadavg()[0])
    return results, loads


def main_rounds(args, bench, proxy, size, image, expected, results, loads):
    for round_no in range(args.repeat[size]):
        order = MODES if round_no % 2 == 0 else MODES[::-1]
        for mode, storage, label in order:
            loads.append(os.getloadavg()[0])
            row = bench.timed(proxy, mode, storage, image, size, expected)
            results.setdefault((size, key(mode, storage)), []).append(row)
            _common.log(
                '%s round %d, %-5s %-34s %6.2f s, last byte to active '
                '%.2f s, hash after %.2f s, wrote %s, CPU %.1f s (load '
                '%.1f)' % (_common.human(size), round_no + 1,
                           storage or '-', label, row['seconds'],
                           row['tail'], row['hash'],
                           _common.human(row['written']), row['cpu'],
                           loads[-1]))


# ---------------------------------------------------------------------------
# Tables


def rounds(args):
    counts = set(args.repeat.values())
    if len(counts) == 1:
        return '%d rounds' % counts.pop()
    return 'the rounds (%s)' % ', '.join(
        '%d at %s' % (args.repeat[size], _common.human(size))
        for size in args.sizes)


def median_of(runs, field):
    return _common.median([r[field] for r in runs])


def storage_label(storage):
    return {'store': 'store', 'spool': 'spool', None: '-'}[storage]


def table_a(args, results, size):
    base = results[(size, key('plain', None))]
    base_mibps = _common.median([size / MiB / r['seconds'] for r in base])
    rows = []
    for mode, storage, label in MODES:
        runs = results[(size, key(mode, storage))]
        mibps = _common.median([size / MiB / r['seconds'] for r in runs])
        paired = _common.median([b['seconds'] / r['seconds']
                                 for r, b in zip(runs, base)])
        rows.append([
            label, storage_label(storage), '%.0f' % mibps,
            '%.3f' % (mibps / base_mibps), '%.3f' % paired,
            '-' if storage != 'store' else (
                'yes' if min(mibps / base_mibps, paired) >= 1.0 else 'NO'),
            '%.1f' % median_of(runs, 'cpu'),
            sum(r['conflicts'] for r in runs),
            ' '.join('%.1f' % r['seconds'] for r in runs)])
    return _common.table(
        ['upload', 'sessions', 'MiB/s', 'vs plain', 'paired', '>= 1.0',
         'workers CPU s', '409s', 'rounds (s)'],
        rows, title=(
            '(a) %s image into RBD through the proxy (no faults), %d rounds, '
            'medians; time from the first request to the last answer; vs '
            'plain = throughput / the plain PUT\'s (paired: median of the '
            'per-round ratios); sessions: the resumable filter\'s '
            'session_storage; workers CPU: the uwsgi workers\' user+system '
            'time per upload; 409s: streams answered 409 "finalizing" '
            'although their bytes were held (all rounds)'
            % (_common.human(size), args.repeat[size])))


def per_size_table(args, results, title, fmt, target=None):
    """One row per mode, one column per size: ``fmt(runs, size)``, a
    ``(text, value)`` (``target(value)`` says whether it is met; its
    docstring is the column's header), then every round."""
    rows = []
    for mode, storage, label in MODES:
        row = [label, storage_label(storage)]
        verdict = True
        for size in args.sizes:
            value = fmt(results[(size, key(mode, storage))], size)
            row.append(value[0])
            if target is not None:
                verdict = verdict and target(value[1])
        if target is not None:
            row.append('-' if storage != 'store' else (
                'yes' if verdict else 'NO'))
        for size in args.sizes:
            row.append(' '.join(fmt([r], size)[0] for r in
                                results[(size, key(mode, storage))]))
        rows.append(row)
    headers = ['upload', 'sessions'] + [_common.human(s) for s in args.sizes]
    if target is not None:
        headers.append(target.__doc__)
    headers += ['rounds %s' % _common.human(s) for s in args.sizes]
    return _common.table(headers, rows, title=title)


def table_b(args, results):
    def tail(runs, size):
        value = median_of(runs, 'tail')
        return '%.2f' % value, value

    def flat(value):
        """<= 1 s"""
        return value <= 1.0
    return per_size_table(args, results, (
        '(b) seconds from the client\'s last byte (the proxy\'s last read '
        'from it) to a GET answering active, medians of %s'
        % rounds(args)), tail, flat)


def table_split(args, results):
    def split(runs, size):
        first = [r['to_finalize'] for r in runs
                 if r['to_finalize'] is not None]
        second = [r['finalize'] for r in runs if r['finalize'] is not None]
        if not first or not second:
            return '-', None
        return '%.2f + %.2f' % (_common.median(first),
                                _common.median(second)), None
    return per_size_table(args, results, (
        'where (b) goes, from Glance\'s log: seconds from the client\'s '
        'last byte to the filter\'s "Upload session finalizing" (the '
        'server still receiving and writing what the client had sent) + '
        'from it to "finished_success" (the checks, and Glance storing or '
        'registering the image), medians'), split)


def table_c(args, results):
    def written(runs, size):
        value = median_of(runs, 'written') / (size / GiB)
        return _common.human(int(value)) if value else '0', value

    def cancelled(runs, size):
        value = median_of(runs, 'cancelled') / (size / GiB)
        return _common.human(int(value)) if value else '0', value

    def zero(value):
        """< 1 MiB"""
        return value < MiB
    first = per_size_table(args, results, (
        '(c) bytes the uwsgi master and workers wrote to local disk '
        '(write_bytes of /proc/<pid>/io) per GiB uploaded, medians of %s'
        % rounds(args)), written, zero)
    second = per_size_table(args, results, (
        'of which never reached the disk (cancelled_write_bytes: the file '
        'was removed while its pages were dirty), per GiB uploaded'),
        cancelled)
    return first + '\n\n' + second


def table_hash(args, results):
    def after(runs, size):
        value = median_of(runs, 'hash')
        return '%.1f' % value, value
    return per_size_table(args, results, (
        'seconds from active to os_hash_value and checksum in the image '
        '(Glance\'s location import hashes a store-native image after '
        'activating it; the others have them at active), medians of %s'
        % rounds(args)), after)


def table_d(args, results):
    one = {'pieces': results[WAN_MODES[0][2]],
           'whole': results[WAN_MODES[2][2]]}
    rows = []
    for mode, streams, label in WAN_MODES:
        runs = results[label]
        base = one[mode]
        seconds = median_of(runs, 'seconds')
        speedup = median_of(base, 'seconds') / seconds
        paired = _common.median([b['seconds'] / r['seconds']
                                 for r, b in zip(runs, base)])
        rows.append([
            label, '%.1f' % seconds,
            '%.1f' % (args.wan_size / MiB / seconds),
            '%.2f' % speedup, '%.2f' % paired,
            '-' if streams == 1 else ('yes' if min(speedup, paired) >= 3.0
                                      else 'NO'),
            '%.2f' % median_of(runs, 'tail'),
            '%.1f' % median_of(runs, 'hash'),
            sum(r['conflicts'] for r in runs),
            ' '.join('%.1f' % r['seconds'] for r in runs)])
    return _common.table(
        ['upload', 's', 'MiB/s', 'speed-up', 'paired', '>= 3.0',
         'last byte to active s', 'hash after s', '409s', 'rounds (s)'],
        rows, title=(
            '(d) %s image into RBD, store-native, over an emulated WAN (the '
            'proxy delays each connection %d ms each way and caps it at '
            '%s/s), %d rounds, medians; speed-up = time of one stream (the '
            'same requests) / time'
            % (_common.human(args.wan_size), args.latency * 1000,
               _common.human(args.rate), args.wan_repeat)))


def code_line(args):
    """Which sizeaware Glance ran."""
    if args.sizeaware_from:
        return 'sizeaware imported from %s' % args.sizeaware_from

    def git(*argv):
        return subprocess.run(['git', '-C', str(_common.REPO), *argv],
                              capture_output=True, text=True).stdout.strip()
    changed = git('status', '--porcelain', '--', 'sizeaware')
    return 'sizeaware of %s%s' % (git('rev-parse', '--short', 'HEAD'),
                                  ' with uncommitted changes' if changed
                                  else '')


def report(args, results, loads):
    tables = []
    main = results['main']
    if main:
        if 'a' in args.parts:
            tables += [table_a(args, main, size) for size in args.sizes]
        if 'b' in args.parts:
            tables.append(table_b(args, main))
            tables.append(table_split(args, main))
            tables.append(table_hash(args, main))
        if 'c' in args.parts:
            tables.append(table_c(args, main))
    if results['wan']:
        tables.append(table_d(args, results['wan']))
    if results.get('delete_retries'):
        tables.append('Deletes answered 500 by Glance and made again: %d'
                      % results['delete_retries'])
    if results.get('leftovers'):
        tables.append('RBD images left in the pool after a delete: %r'
                      % results['leftovers'])
    uptime = subprocess.run(['uptime'], capture_output=True,
                            text=True).stdout.strip()
    tables.append(
        'Glance %s under uwsgi (%d processes x %d threads), PostgreSQL, RBD '
        'backend on a one-node Ceph on this host, resumable (session_storage '
        'store on /, spool on %s), sizeaware and download filters, %s; '
        'load average %.1f to %.1f during the run\n%s'
        % (args.release, args.processes, args.threads, SPOOL,
           code_line(args) + ''.join(
               ', %s for Glance\'s librbd' % option
               for option in args.rbd_option) + (
               ', librbd logging at level 5' if args.rbd_debug else ''),
           min(loads), max(loads), uptime))
    return tables


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', default='256M',
                        help='image sizes of parts a to c, comma-separated '
                             '(default 256M; the recorded figures: 1G,4G)')
    parser.add_argument('--repeat', default='3',
                        help='rounds of parts a to c: one number, or one '
                             'per size, comma-separated (default 3)')
    parser.add_argument('--wan-repeat', type=int, default=3,
                        help='rounds of part d (default 3)')
    parser.add_argument('--parts', default='a,b,c,d',
                        help='which parts (default a,b,c,d; a to c are the '
                             'same uploads)')
    parser.add_argument('--wan-size', type=_common.parse_size,
                        default='256M', help='image of part d (default '
                                             '256M)')
    parser.add_argument('--latency', type=float, default=0.025,
                        help='part d: delay each way, seconds (default '
                             '0.025)')
    parser.add_argument('--rate', type=_common.parse_size, default='20M',
                        help='part d: bytes per second per connection and '
                             'direction (default 20M)')
    parser.add_argument('--rbd-debug', action='store_true',
                        help='keep teststack\'s librbd log (level 5) for '
                             'Glance\'s client')
    parser.add_argument('--rbd-option', action='append', default=[],
                        metavar='NAME=VALUE',
                        help='a line for the section of Glance\'s cephx '
                             'client in its ceph.conf (librbd\'s options; '
                             'repeatable)')
    parser.add_argument('--debug', action='store_true',
                        help='Glance\'s debug logging')
    parser.add_argument('--sizeaware-from', metavar='DIR',
                        help='a directory holding a sizeaware package '
                             '(e.g. a commit\'s, from git archive) for '
                             'Glance to import instead of the venv\'s')
    parser.add_argument('--keep-logs', metavar='DIR',
                        help='copy Glance\'s log there at the end')
    _common.add_glance_options(parser)
    args = parser.parse_args(argv)
    args.sizes = [_common.parse_size(s) for s in args.sizes.split(',')
                  if s.strip()]
    args.parts = set(p.strip() for p in args.parts.split(',') if p.strip())
    repeat = [int(n) for n in args.repeat.split(',') if n.strip()]
    if len(repeat) == 1:
        repeat *= len(args.sizes)
    if len(repeat) != len(args.sizes):
        parser.error('--repeat: one number, or one per size')
    args.repeat = dict(zip(args.sizes, repeat))
    started = time.perf_counter()
    results, loads = run(args)
    _common.log('done in %.0f s' % (time.perf_counter() - started))
    _common.print_tables(report(args, results, loads))
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Helpers shared by the benchmark scripts.

Not a test module: nothing here asserts a timing. The scripts import it as
``_common`` (they run with ``benchmarks/`` first on ``sys.path``) and make
the repository root importable for ``teststack`` and ``sizeaware``.
"""

import argparse
import contextlib
import datetime
import json
import os
import pathlib
import platform
import re
import statistics
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: The client's read and send unit: one chunk of a chunked body. curl -T
#: sends chunks of 65524 bytes (its 64 KiB buffer less the chunk framing);
#: python-glanceclient sends 64 KiB ones.
PIECE = 64 * KiB

_SIZE_RE = re.compile(r'\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(i?B?)\s*', re.I)


def parse_size(text):
    """``'1G'``, ``'100M'``, ``'512MiB'``, ``'1048576'``: bytes (binary
    units)."""
    match = _SIZE_RE.fullmatch(str(text))
    if not match:
        raise argparse.ArgumentTypeError('not a size: %r' % text)
    number, unit = float(match.group(1)), match.group(2).upper()
    factor = {'': 1, 'K': KiB, 'M': MiB, 'G': GiB, 'T': 1024 * GiB}[unit]
    return int(number * factor)


def human(n):
    for unit, factor in (('GiB', GiB), ('MiB', MiB), ('KiB', KiB)):
        if n >= factor:
            value = n / factor
            return ('%d %s' % (value, unit) if value == int(value)
                    else '%.2f %s' % (value, unit))
    return '%d B' % n


def log(msg):
    print('[bench] %s' % msg, file=sys.stderr, flush=True)


def add_upload_options(parser, repeat, repeat_help):
    """The options every upload benchmark takes: body, chunks, rounds."""
    parser.add_argument('--size', type=parse_size, default='1G',
                        help='body size (default 1G)')
    parser.add_argument('--repeat', type=int, default=repeat,
                        help='%s (default %d)' % (repeat_help, repeat))
    parser.add_argument('--piece', type=parse_size, default='64K',
                        help='chunk size of a chunked body (default 64K, '
                             'about what curl -T and glanceclient send)')
    parser.add_argument('--image', help='image file to send (default a '
                                        'random file in /tmp, kept)')


def add_download_options(parser, size, repeat):
    """The options every download benchmark takes: image and rounds."""
    parser.add_argument('--size', type=parse_size, default=size,
                        help='image size (default %s)' % size)
    parser.add_argument('--repeat', type=int, default=repeat,
                        help='rounds (default %d)' % repeat)
    parser.add_argument('--image', help='image file to upload (default a '
                                        'random file of --size in /tmp, '
                                        'kept)')


def add_glance_options(parser, processes=2, threads=8):
    """The options of a benchmark that runs one Glance under uwsgi."""
    parser.add_argument('--release', default='33',
                        help='Glance release (default 33)')
    parser.add_argument('--processes', type=int, default=processes,
                        help='uwsgi processes (default %d)' % processes)
    parser.add_argument('--threads', type=int, default=threads,
                        help='uwsgi threads per process (default %d)'
                             % threads)


def print_tables(tables):
    """The closing output of a script: the machine, then each table."""
    print()
    print(machine_line())
    for text in tables:
        print()
        print(text)


def run_on_image(parser, argv, run, report):
    """The ``main`` of a benchmark of one Glance and one image: the command
    line of ``parser`` and :func:`add_glance_options` (its ``--size`` and
    ``--image`` say the image, see :func:`image_file`), then ``run(args,
    image)``, which returns ``(results, loads)``, and the tables
    ``report(args, results, loads)`` returns, printed."""
    add_glance_options(parser)
    args = parser.parse_args(argv)
    image = image_file(args.size, args.image)
    results, loads = run(args, image)
    print_tables(report(args, results, loads))
    return 0


def machine_line():
    """One line saying when and where the figures were taken."""
    load = os.getloadavg()
    return '%s, %s, %d cores, load %.2f %.2f %.2f, Python %s' % (
        datetime.datetime.now().strftime('%Y-%m-%d %H:%M'),
        platform.node() or 'host', os.cpu_count() or 0, *load,
        platform.python_version())


# ---------------------------------------------------------------------------
# The image file


def image_file(size, path=None):
    """A file of ``size`` random bytes (made once, then reused).

    Kept in /tmp so the scripts can share it; remove it with ``rm`` when
    done. Read once so that it sits in the page cache before timing.
    """
    path = pathlib.Path(path or '/tmp/sizeaware-bench-%d.img' % size)
    if not path.exists() or path.stat().st_size != size:
        log('writing %s (%s of random data)' % (path, human(size)))
        tmp = path.with_suffix('.part')
        with open(tmp, 'wb') as out:
            left = size
            while left:
                n = min(left, 8 * MiB)
                out.write(os.urandom(n))
                left -= n
        tmp.rename(path)
    with open(path, 'rb') as warm:
        while warm.read(8 * MiB):
            pass
    return path


# ---------------------------------------------------------------------------
# The client: the library's connection


class Result:
    def __init__(self, status, body, seconds, sent):
        self.status = status
        self.body = body
        self.seconds = seconds
        self.sent = sent

    def __repr__(self):
        return '<Result %d %.2fs %r>' % (self.status, self.seconds,
                                         self.body[:200])


@contextlib.contextmanager
def connected(url, headers=None, timeout=120):
    """:class:`sizeaware.client.connection.GlanceConnection` to ``url`` (a
    server's root, or a path prefix of it), without a token (identity
    comes in ``headers``), on connections of its own: each use opens its
    own, as concurrent clients do, and closes them on exit."""
    from keystoneauth1 import noauth
    from keystoneauth1 import session as ks_session

    from sizeaware.client import connection
    session = ks_session.Session(auth=noauth.NoAuth())
    try:
        yield connection.GlanceConnection(session, url, headers,
                                          authenticated=False,
                                          read_timeout=timeout)
    finally:
        session.session.close()


@contextlib.contextmanager
def file_body(file_path, size, *, chunked, piece=PIECE, offset=0):
    """``(body, sent)``: ``size`` bytes of ``file_path`` from ``offset``
    as a request body, and a list whose one item counts the bytes handed
    to the connection.

    Without ``chunked``, a body of known length (``Content-Length``) read
    from the file 1 MiB at a time; with it, an iterator of ``piece``-byte
    pieces, sent one chunk each.
    """
    from sizeaware.client import readers
    sent = [0]

    def count(data):
        sent[0] += len(data)
    with open(file_path, 'rb', buffering=0) as src:
        if not chunked:
            yield readers.FileSpan(src.fileno(), offset, offset + size,
                                   count), sent
            return

        def pieces():
            src.seek(offset)
            while sent[0] < size:
                data = src.read(min(piece, size - sent[0]))
                if not data:
                    raise RuntimeError('%s is shorter than %d'
                                       % (file_path, size))
                count(data)
                yield data
        yield pieces(), sent


def upload(url, path, file_path, size, *, chunked, headers=None,
           piece=PIECE, timeout=900, offset=0):
    """PUT ``size`` bytes of ``file_path`` (from ``offset``) to ``url +
    path``; a Result (see :func:`file_body` for the framing).

    The time runs from the request to the end of the answer. No ``Expect:
    100-continue`` is sent (uwsgi's http-socket never answers it). A
    server that answers before reading the whole body and closes leaves
    its answer readable (urllib3 swallows the send's broken pipe).
    """
    with connected(url, timeout=timeout) as conn, file_body(
            file_path, size, chunked=chunked, piece=piece,
            offset=offset) as (body, sent):
        start = time.perf_counter()
        response = conn.request('PUT', path, headers=headers, data=body)
        seconds = time.perf_counter() - start
        return Result(response.status_code, response.content, seconds,
                      sent[0])


def download(url, path, headers=None, on_piece=None, timeout=600):
    """GET ``path`` whole, read 1 MiB at a time (each piece handed to
    ``on_piece``); ``(status, seconds, bytes received)``."""
    with connected(url, headers, timeout=timeout) as conn:
        start = time.perf_counter()
        response = conn.request('GET', path, stream=True)
        with contextlib.closing(response):
            received = 0
            if response.status_code == 200:
                while piece := response.raw.read(MiB, decode_content=False):
                    received += len(piece)
                    if on_piece is not None:
                        on_piece(piece)
            else:
                received = len(response.content)
        return response.status_code, time.perf_counter() - start, received


def request(url, method, path, body=None, headers=None, timeout=120):
    """A small JSON request; (status, parsed body or bytes)."""
    with connected(url, timeout=timeout) as conn:
        if body is not None and not isinstance(body, bytes):
            response = conn.request(method, path, headers=headers,
                                    json_body=body)
        else:
            response = conn.request(method, path, headers=headers,
                                    data=body)
        data = response.content
        with contextlib.suppress(ValueError):
            data = json.loads(data)
        return response.status_code, data


# ---------------------------------------------------------------------------
# uwsgi processes


def read_pid(pidfile, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(pathlib.Path(pidfile).read_text().strip())
        if time.monotonic() > deadline:
            raise RuntimeError('no pid in %s' % pidfile)
        time.sleep(0.1)


def children(pid):
    """Direct children of ``pid`` (from /proc/<pid>/task/*/children)."""
    found = []
    for task in pathlib.Path('/proc/%d/task' % pid).glob('*'):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / 'children').read_text().split()]
    return sorted(set(found))


def uwsgi_worker(master_pid):
    """The single uwsgi worker of a master started with processes = 1."""
    workers = children(master_pid)
    if len(workers) != 1:
        raise RuntimeError('expected one uwsgi worker under %d, found %r'
                           % (master_pid, workers))
    return workers[0]


def proc_status(pid, field):
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM), in bytes."""
    with open('/proc/%d/status' % pid) as status:
        for line in status:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * KiB
    raise KeyError(field)


def cpu_seconds(pid):
    """User + system CPU time of ``pid`` (all its threads) so far."""
    with open('/proc/%d/stat' % pid) as stat:
        fields = stat.read().rsplit(')', 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def proc_io(pid):
    """/proc/<pid>/io as ``{field: int}`` (``write_bytes``: bytes the
    process, all its threads, caused to be written to a block device, at
    the time it dirtied them; ``cancelled_write_bytes``: those of them
    never written because their file was truncated or removed first)."""
    with open('/proc/%d/io' % pid) as io:
        return {name: int(value) for name, value in
                (line.split(':', 1) for line in io if ':' in line)}


def reset_peak_rss(pid):
    """Make VmHWM start again from the current RSS (needs root)."""
    with open('/proc/%d/clear_refs' % pid, 'w') as refs:
        refs.write('5')


# ---------------------------------------------------------------------------
# Output


def median(values):
    return statistics.median(values) if values else float('nan')


def table(headers, rows, title=None):
    """An aligned text table (also valid reStructuredText simple table)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells])
              for i, h in enumerate(headers)]
    rule = '  '.join('=' * w for w in widths)
    lines = []
    if title:
        lines += [title, '']
    lines.append(rule)
    lines.append('  '.join(h.ljust(w) for h, w in zip(headers, widths))
                 .rstrip())
    lines.append(rule)
    for row in cells:
        lines.append('  '.join(c.ljust(w) for c, w in zip(row, widths))
                     .rstrip())
    lines.append(rule)
    return '\n'.join(lines)



# ---------------------------------------------------------------------------
# One Glance, two pipelines


WITH_PREFIX = '/with'
WITHOUT_PREFIX = '/without'


def dual_paste_ini(venv, resumable=None):
    """A paste ini serving the same Glance with and without the filter.

    The release's shipped ini is derived as ``teststack.glance`` derives it
    (``sizeaware`` after ``context`` in every pipeline, plus the test flavor
    ``sizeawaretest`` that takes identity from ``X-*`` headers). Its
    ``[composite:api]`` is then copied, without ``sizeaware``, as
    ``[composite:api-nofilter]``, and the flavor's root URL map serves::

        /with/...     api           (with sizeaware)
        /without/...  api-nofilter  (the same pipeline without it)
        /...          api           (what teststack polls at startup)

    so one uwsgi worker, one configuration and one store serve both.

    With ``resumable`` (the ``[filter:resumable]`` options, ``spool_dir``
    among them), the filter compared is ``resumable`` instead: ``api`` has
    ``resumable sizeaware``, ``api-nofilter`` ``sizeaware`` alone.
    """
    from teststack import glance as glance_stack
    shipped = glance_stack.shipped_paste_ini(venv).read_text()
    with_filter = glance_stack.build_paste_ini(shipped, with_filter=True,
                                               resumable=resumable)
    without = glance_stack.build_paste_ini(
        shipped, with_filter=resumable is not None)
    compared = (glance_stack.FILTER_NAME if resumable is None
                else glance_stack.RESUMABLE_NAME)
    nofilter = dict(glance_stack.split_sections(without))['composite:api']
    root = 'composite:glance-api-%s' % glance_stack.TEST_FLAVOR
    out = []
    for name, lines in glance_stack.split_sections(with_filter):
        if name == root:
            body = [line for line in lines[1:] if line.strip()]
            lines = [lines[0]] + body + [
                '%s: api' % WITH_PREFIX,
                '%s: api-nofilter' % WITHOUT_PREFIX, '']
        out.extend(lines)
    out += ['', '# benchmark only: [composite:api] without %s' % compared,
            '[composite:api-nofilter]'] + nofilter[1:]
    text = '\n'.join(out).rstrip('\n') + '\n'
    for line in nofilter:
        if compared in line.split('=', 1)[-1].split():
            raise RuntimeError('api-nofilter still has %s' % compared)
    return text


class GlanceAPI:
    """Create, upload to, check and delete images on one Glance, through
    the library's connection (``prefix`` picks a pipeline of
    :func:`dual_paste_ini`)."""

    def __init__(self, url, identity):
        self.url = url
        self.identity = dict(identity)

    def connected(self, prefix='', timeout=120):
        return connected(self.url + prefix, self.identity, timeout)

    def create(self, prefix=''):
        with self.connected(prefix) as conn:
            return conn.create_image(name='sizeaware-bench',
                                     disk_format='raw',
                                     container_format='bare')['id']

    def get(self, image_id, prefix=''):
        with self.connected(prefix) as conn:
            return conn.get_image(image_id)

    def delete(self, image_id, prefix=''):
        with self.connected(prefix) as conn:
            conn.delete_image(image_id)

    def upload(self, image_id, file_path, size, *, chunked, declare=True,
               prefix='', piece=PIECE, headers=None, timeout=900):
        """PUT the image's data (see :func:`file_body` for the framing),
        ``X-OpenStack-Image-Size`` with ``declare``; a Result, timed from
        the request to the end of the answer."""
        with self.connected(prefix, timeout) as conn, file_body(
                file_path, size, chunked=chunked,
                piece=piece) as (body, sent):
            start = time.perf_counter()
            response = conn.put_data(image_id, body,
                                     size=size if declare else None,
                                     headers=headers)
            seconds = time.perf_counter() - start
            return Result(response.status_code, response.content, seconds,
                          sent[0])

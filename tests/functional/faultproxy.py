"""A TCP proxy on loopback that injects faults at chosen byte offsets.

The kernel here has no ``netem``; faults a real network has (a link that
drops, a peer that goes quiet) are made by this proxy instead, between an
unmodified client and the server::

    with FaultProxy(('127.0.0.1', glance_port)) as proxy:
        proxy.cut_at(40 * 2**20)        # drop the connection there
        client_talks_to(proxy.url)
        proxy.cut.wait(10)              # the fault fired

Offsets count the bytes sent from clients to the server, over every
connection since the fault was armed (requests of one upload often use a
connection each). A fault fires once, then the proxy passes everything
again: a client resuming through it gets through.

``cut_at(offset)``
    forwards exactly ``offset`` bytes, then closes both sides of that
    connection.
``stall_at(offset, seconds)``
    forwards exactly ``offset`` bytes, then forwards nothing more on that
    connection for ``seconds`` (the server sees a silent client), then
    goes on.

A slow link, for benchmarks: ``FaultProxy(target, latency=0.025,
rate=20 * 2**20)`` delivers every piece, in each direction of each
connection, ``latency`` seconds after the proxy read it, and at most
``rate`` bytes per second per connection and direction (a per-connection
cap, as a WAN path or a shaping router gives each TCP flow). What the
proxy holds in flight per direction is bounded (``window`` bytes, default
4 MiB), so a fast client is held back as by a full TCP window. Faults and
shaping combine: a cut closes the connection once the bytes before it
were delivered.

Faults on the replies, server to client (a store's answers to Glance,
when Glance is the client): offsets count the bytes the server sent,
headers included, over every connection since the faults were armed;
several offsets may be given, ascending, and each fires once, in order
(``cut_reply_at(10, 11, 12)`` cuts one connection after 10 bytes, then
each of the next two after 1 byte more)::

    proxy.cut_reply_at(100 * 2**20, 200 * 2**20)

``cut_reply_at(*offsets)``
    delivers exactly ``offset`` bytes, then resets that connection (the
    client's next read raises ``ConnectionResetError``).
``truncate_reply_at(*offsets)``
    delivers exactly ``offset`` bytes, then closes that connection cleanly:
    the client sees its reply end early.
``stall_reply_at(offset, seconds)``
    delivers exactly ``offset`` bytes, then nothing more on that
    connection for ``seconds``, then goes on.
``corrupt_reply_at(*offsets)``
    flips every bit of the byte at each offset and goes on: the client
    gets a reply of the right length with one wrong byte.

``reply_faults`` counts the reply faults fired since they were armed.

Counters (reset by ``reset_counters()``): ``received`` is every byte read
from clients, the bytes that left them on the wire, including those a cut
dropped; ``forwarded`` what reached the server; ``last_received`` the
``time.perf_counter()`` of the last read from a client; ``replied`` every
byte read from servers; ``delivered`` what of it reached clients;
``connections`` the connections accepted.
"""

import queue
import socket
import struct
import threading
import time

_PIECE = 64 * 1024


class FaultProxy:
    """See the module docstring. ``url`` is ``http://127.0.0.1:<port>``.

    ``target`` is one ``(host, port)``, or a list of them: each new
    connection then goes to the next one, round-robin (two API servers
    behind one address, as a load balancer spreads them).
    """

    def __init__(self, target, *, latency=0.0, rate=None, window=4 << 20):
        self.targets = (list(target) if isinstance(target, list)
                        else [target])
        self.target = self.targets[0]
        self.latency = latency
        self.rate = rate
        self.window = window
        self.received = 0
        self.forwarded = 0
        self.last_received = None
        self.replied = 0
        self.delivered = 0
        self.connections = 0
        #: Reply faults fired since they were armed.
        self.reply_faults = 0
        self._reply_faults = []
        self._replied_since = 0
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.port = self.listener.getsockname()[1]
        self.url = 'http://127.0.0.1:%d' % self.port
        #: Set when an armed cut has fired.
        self.cut = threading.Event()
        #: Set when an armed stall has fired (set before it waits).
        self.stalled = threading.Event()
        self._lock = threading.Lock()
        self._fault = None
        self._sent = 0
        self._sockets = set()
        self._closing = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def cut_at(self, offset):
        self._arm(('cut', offset, None))

    def stall_at(self, offset, seconds):
        self._arm(('stall', offset, seconds))

    def cut_reply_at(self, *offsets):
        self._arm_replies('cut', offsets)

    def truncate_reply_at(self, *offsets):
        self._arm_replies('truncate', offsets)

    def stall_reply_at(self, offset, seconds):
        self._arm_replies('stall', [offset], seconds)

    def corrupt_reply_at(self, *offsets):
        self._arm_replies('corrupt', offsets)

    def reset_counters(self):
        with self._lock:
            self.received = self.forwarded = 0
            self.replied = self.delivered = self.connections = 0
            self.last_received = None

    def close(self):
        self._closing = True
        # shutdown, not close alone, wakes the thread blocked in accept().
        _close(self.listener)
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock)
        self._thread.join(5)

    # -- internals ----------------------------------------------------------

    def _arm(self, fault):
        with self._lock:
            self._fault, self._sent = fault, 0
            self.cut.clear()
            self.stalled.clear()

    def _arm_replies(self, kind, offsets, seconds=None):
        if list(offsets) != sorted(offsets):
            raise ValueError('reply fault offsets must ascend')
        with self._lock:
            self._reply_faults = [(kind, o, seconds) for o in offsets]
            self._replied_since = 0
            self.reply_faults = 0

    def _accept(self):
        while not self._closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            target = self.targets[self.connections % len(self.targets)]
            try:
                server = socket.create_connection(target)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._sockets.update((client, server))
                self.connections += 1
            up = self._link(server, client, count=True)
            down = self._link(client, server)
            threading.Thread(target=self._upstream,
                             args=(client, server, up),
                             daemon=True).start()
            threading.Thread(target=self._downstream,
                             args=(server, client, down),
                             daemon=True).start()

    def _link(self, sink, other, count=False):
        if not self.latency and not self.rate:
            return _Direct(sink, self if count else None)
        return _Shaped(sink, other, self, count)

    def _upstream(self, client, server, link):
        """Client to server, where the faults are."""
        try:
            while True:
                data = client.recv(_PIECE)
                if not data:
                    break
                with self._lock:
                    self.received += len(data)
                    self.last_received = time.perf_counter()
                while data:
                    allowed, fault = self._allowance(len(data))
                    if allowed:
                        link.send(data[:allowed])
                        data = data[allowed:]
                    if fault is None:
                        continue
                    kind, _, seconds = fault
                    if kind == 'cut':
                        link.flush()
                        self.cut.set()
                        return self._drop(client, server)
                    link.flush()
                    self.stalled.set()
                    time.sleep(seconds)
            link.finish()
        except OSError:
            self._drop(client, server)

    def _allowance(self, wanted):
        """How many of ``wanted`` bytes may go now, and the fault that
        fires after them (or None)."""
        with self._lock:
            if self._fault is None:
                return wanted, None
            left = self._fault[1] - self._sent
            if wanted < left:
                self._sent += wanted
                return wanted, None
            fault, self._fault = self._fault, None
            self._sent += left
            return left, fault

    def _downstream(self, server, client, link):
        """Server to client, where the reply faults are."""
        flip = False  # a corruption armed at the end of a piece
        try:
            while True:
                data = server.recv(_PIECE)
                if not data:
                    break
                with self._lock:
                    self.replied += len(data)
                if flip:
                    data, flip = bytes([data[0] ^ 0xFF]) + data[1:], False
                while data:
                    allowed, fault = self._reply_allowance(len(data))
                    if allowed:
                        link.send(data[:allowed])
                        data = data[allowed:]
                        with self._lock:
                            self.delivered += allowed
                    if fault is None:
                        continue
                    kind, _, seconds = fault
                    if kind == 'corrupt':
                        if data:
                            data = bytes([data[0] ^ 0xFF]) + data[1:]
                        else:
                            flip = True
                        continue
                    link.flush()
                    if kind == 'stall':
                        time.sleep(seconds)
                        continue
                    if kind == 'cut':
                        # An abortive close: the client gets a reset.
                        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                          struct.pack('ii', 1, 0))
                        # Wakes the other direction's recv, sends nothing.
                        client.shutdown(socket.SHUT_RD)
                    return self._drop_reply(client, server, kind)
            link.finish()
        except OSError:
            self._drop(server, client)

    def _reply_allowance(self, wanted):
        """:meth:`_allowance` for the reply faults."""
        with self._lock:
            if not self._reply_faults:
                return wanted, None
            left = self._reply_faults[0][1] - self._replied_since
            if wanted < left:
                self._replied_since += wanted
                return wanted, None
            self._replied_since += max(left, 0)
            self.reply_faults += 1
            return max(left, 0), self._reply_faults.pop(0)

    def _drop_reply(self, client, server, kind):
        with self._lock:
            self._sockets.difference_update((client, server))
        if kind == 'truncate':
            _close(client)
        else:
            client.close()
        _close(server)

    def _drop(self, *sockets):
        for sock in sockets:
            _close(sock)
            with self._lock:
                self._sockets.discard(sock)


class _Direct:
    """One direction of a connection, unshaped: sent at once."""

    def __init__(self, sink, counter):
        self.sink = sink
        self.counter = counter

    def send(self, data):
        self.sink.sendall(data)
        if self.counter is not None:
            with self.counter._lock:
                self.counter.forwarded += len(data)

    def flush(self):
        pass

    def finish(self):
        self.sink.shutdown(socket.SHUT_WR)


class _Shaped:
    """One direction of a connection through a slow link: each piece is
    sent ``latency`` after it was read, at ``rate`` at most, by a thread
    of its own; at most ``window`` bytes wait."""

    _FINISH = object()

    def __init__(self, sink, other, proxy, count):
        self.sink = sink
        self.other = other
        self.proxy = proxy
        self.count = count
        self.queue = queue.Queue(maxsize=max(2, proxy.window // _PIECE))
        self.done = threading.Event()
        self.failed = False
        threading.Thread(target=self._run, daemon=True).start()

    def send(self, data):
        item = (time.monotonic() + self.proxy.latency, data)
        while True:
            if self.failed:
                raise OSError('link closed')
            try:
                return self.queue.put(item, timeout=1)
            except queue.Full:
                pass

    def flush(self):
        """Wait until everything queued so far was sent."""
        self.queue.put((time.monotonic(), None))
        self.done.wait()
        self.done.clear()

    def finish(self):
        self.queue.put((time.monotonic() + self.proxy.latency,
                        self._FINISH))

    def _run(self):
        free_at = time.monotonic()
        while True:
            due, data = self.queue.get()
            if data is None:
                self.done.set()
                continue
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                if data is self._FINISH:
                    self.sink.shutdown(socket.SHUT_WR)
                    return
                if self.proxy.rate:
                    now = time.monotonic()
                    if free_at > now:
                        time.sleep(free_at - now)
                    free_at = max(free_at, now) + len(data) / self.proxy.rate
                self.sink.sendall(data)
            except OSError:
                self.failed = True
                self.done.set()
                self.proxy._drop(self.sink, self.other)
                return
            if self.count:
                with self.proxy._lock:
                    self.proxy.forwarded += len(data)


def _close(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()

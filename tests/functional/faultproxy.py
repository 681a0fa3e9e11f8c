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
"""

import socket
import threading
import time

_PIECE = 64 * 1024


class FaultProxy:
    """See the module docstring. ``url`` is ``http://127.0.0.1:<port>``."""

    def __init__(self, target):
        self.target = target
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

    def _accept(self):
        while not self._closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._sockets.update((client, server))
            threading.Thread(target=self._upstream, args=(client, server),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client),
                             daemon=True).start()

    def _upstream(self, client, server):
        """Client to server, where the faults are."""
        try:
            while True:
                data = client.recv(_PIECE)
                if not data:
                    break
                while data:
                    allowed, fault = self._allowance(len(data))
                    if allowed:
                        server.sendall(data[:allowed])
                        data = data[allowed:]
                    if fault is None:
                        continue
                    kind, _, seconds = fault
                    if kind == 'cut':
                        self.cut.set()
                        return self._drop(client, server)
                    self.stalled.set()
                    time.sleep(seconds)
            server.shutdown(socket.SHUT_WR)
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

    def _pipe(self, source, sink):
        try:
            while True:
                data = source.recv(_PIECE)
                if not data:
                    break
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            self._drop(source, sink)

    def _drop(self, *sockets):
        for sock in sockets:
            _close(sock)
            with self._lock:
                self._sockets.discard(sock)


def _close(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()

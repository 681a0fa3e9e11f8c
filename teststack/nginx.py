"""nginx serving a directory on 127.0.0.1: the web server behind Glance's
HTTP store in the tests and benchmarks.

::

    with Nginx() as web:
        (web.root / 'image').write_bytes(data)
        url = web.url + '/image'      # ETag, Range and If-Match work
        web.requests()                # what nginx served, from its log

One nginx process (``master_process off``, so it serves in the process the
service started and stops with it), ``sendfile`` on, ETags on (nginx's
default: ``"<mtime hex>-<size hex>"``, strong). Every file nginx writes
(log, pid, temporary files) is in the work directory. Needs the Debian
package ``nginx`` (see ``bindep.txt``).
"""

import pathlib

from teststack import process

NGINX = '/usr/sbin/nginx'

# One line per request: method, path, status, body bytes sent, the Range
# and If-Match asked with (empty when absent).
_LOG_FORMAT = '$request_method $uri $status $body_bytes_sent $http_range ' \
              '$http_if_match'

_CONF = '''daemon off;
master_process off;
worker_processes 1;
pid %(workdir)s/nginx-own.pid;
error_log %(workdir)s/error.log info;
events { worker_connections 256; }
http {
    log_format requests escape=none '%(log_format)s';
    access_log %(workdir)s/access.log requests;
    client_body_temp_path %(workdir)s/tmp/body;
    proxy_temp_path %(workdir)s/tmp/proxy;
    fastcgi_temp_path %(workdir)s/tmp/fastcgi;
    uwsgi_temp_path %(workdir)s/tmp/uwsgi;
    scgi_temp_path %(workdir)s/tmp/scgi;
    sendfile on;
    etag on;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:%(port)d;
        root %(root)s;
    }
}
'''


class Request:
    """One line of nginx's access log."""

    def __init__(self, line):
        method, path, status, sent, range_, if_match = line.split(' ', 5)
        self.method, self.path = method, path
        self.status, self.sent = int(status), int(sent)
        self.range = range_ or None
        self.if_match = if_match or None

    def __repr__(self):
        return '<%s %s %d %d range=%s if-match=%s>' % (
            self.method, self.path, self.status, self.sent, self.range,
            self.if_match)


class Nginx(process.Service):
    """nginx serving :attr:`root` at :attr:`url`.

    :param root: the directory served; default ``<workdir>/www``.
    """

    def __init__(self, root=None, port=None, workdir=None):
        super().__init__('nginx', workdir)
        self.root = pathlib.Path(root or self.workdir / 'www')
        self.port = port
        self.conf_path = self.workdir / 'nginx.conf'
        self.access_log = self.workdir / 'access.log'

    @property
    def url(self):
        return 'http://127.0.0.1:%d' % self.port

    def _start(self, timeout):
        self.port = self.port or process.free_port()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.workdir / 'tmp').mkdir(exist_ok=True)
        self.conf_path.write_text(_CONF % {
            'workdir': self.workdir, 'root': self.root, 'port': self.port,
            'log_format': _LOG_FORMAT})
        self.spawn([NGINX, '-p', self.workdir, '-e',
                    self.workdir / 'error.log', '-c', self.conf_path])
        self.wait_for_port(self.port, timeout)

    def requests(self) -> list:
        """Every request served so far (nginx logs a request when it is
        done, a broken one included)."""
        try:
            text = self.access_log.read_text()
        except FileNotFoundError:
            return []
        return [Request(line) for line in text.splitlines() if line]

    def logs(self):
        return super().logs() + [self.workdir / 'error.log']

"""Two Glance API nodes of one deployment behind one address.

A deployment with several API nodes runs them on several hosts, on one
database, behind a load balancer that hands each new connection to the
next node. Here the hosts are loopback addresses (127.0.0.2 and
127.0.0.3: Linux routes all of 127.0.0.0/8 to loopback, no namespace
needed), the database is one PostgreSQL database of the run's cluster, and
the load balancer is :class:`~tests.functional.faultproxy.FaultProxy` with
both nodes as its targets, round-robin, on 127.0.0.1. Glance under uwsgi
closes every connection after its answer, so every request is a new
connection: successive requests through the proxy alternate between the
nodes::

    with two_nodes.two_glance_nodes(
            postgres, 'glance_pair', tmp_path_factory.mktemp('pair'),
            node_options=[{'resumable': {'spool_dir': a}},
                          {'resumable': {'spool_dir': b}}]) as pair:
        api = client.GlanceClient(pair.url, pair.identity_headers('p1'))
        ...
        pair.kill_workers(0)     # node 0's uwsgi workers SIGKILLed
        pair.restart(1)          # node 1 stopped and started again

Each node has a work directory of its own (configuration, staging and
task directories, log), under the directory the caller gives, so that a
restart finds it again; the spool and the stores are whatever the options
name (a spool in the work directory unless ``resumable`` says otherwise).
"""

import contextlib
import os
import shutil
import signal
import threading

from tests.functional import faultproxy
from tests.functional.test_resumable_faults import wait_for_respawned_workers
from teststack import glance as glance_stack

#: The nodes' addresses, one loopback address per node.
HOSTS = ('127.0.0.2', '127.0.0.3')


class TwoNodes:
    """Two started Glance API nodes and the proxy in front of them.

    :ivar nodes: the two :class:`teststack.glance.Glance`, on
        :data:`HOSTS` in that order.
    :ivar proxy: the round-robin :class:`~faultproxy.FaultProxy`.
    :ivar url: the deployment's one address (the proxy's).
    """

    def __init__(self, nodes, proxy):
        self.nodes = nodes
        self.proxy = proxy
        self.url = proxy.url

    def identity_headers(self, project_id, **kwargs) -> dict:
        """The identity headers of the test flavor (see
        :meth:`teststack.glance.Glance.identity_headers`); both nodes
        build the same context from them."""
        return self.nodes[0].identity_headers(project_id, **kwargs)

    def workers(self, index) -> list:
        """The PIDs of node ``index``'s workers: the children of its uwsgi
        master (or of eventlet ``glance-api``'s parent)."""
        (master,) = self.nodes[index].pids.values()
        return [pid for pid in _pids() if _parent(pid) == master]

    def kill_workers(self, index, timeout=30) -> list:
        """SIGKILL every worker of node ``index``, as the kernel's OOM
        killer or a crash would end them, and wait until the master has
        respawned them and they have loaded Glance again; returns the
        PIDs killed."""
        killed = self.workers(index)
        if not killed:
            raise RuntimeError('node %d has no workers' % index)
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        node = self.nodes[index]
        node.wait_until(lambda: set(self.workers(index)).isdisjoint(killed)
                        and len(self.workers(index)) == len(killed),
                        timeout, 'node %d respawning its workers' % index)
        wait_for_respawned_workers(node, timeout)
        node.wait_for_http(node.url + '/versions', timeout, ok=(200, 300))
        return killed

    def restart(self, index, timeout=120):
        """Stop node ``index`` and start it again: same address, port,
        work directory and database (a rolling restart of one node)."""
        node = self.nodes[index]
        wait_for_respawned_workers(node, timeout)
        node.stop()
        node.start(timeout)


@contextlib.contextmanager
def two_glance_nodes(postgres, database, workdir, *, release='33',
                     server='uwsgi', node_options=({}, {}), **options):
    """Two started Glance nodes of ``release`` under ``server`` on
    :data:`HOSTS`, both on PostgreSQL database ``database`` of
    ``postgres`` (made anew), and the round-robin proxy in front of them:
    a :class:`TwoNodes`. Everything is stopped on exit and the nodes' work
    directories (``<workdir>/node1``, ``<workdir>/node2``) removed.

    :param options: :class:`teststack.glance.Glance` options of both
        nodes (``backends``, ``resumable``, ``processes``...).
    :param node_options: two dicts of options for one node each, which
        override ``options`` (a spool directory of the node's own mount,
        for instance).
    """
    database_url = postgres.create_database(database)
    nodes = []
    for index, host in enumerate(HOSTS):
        kwargs = dict(options, **node_options[index])
        nodes.append(glance_stack.Glance(
            release, server=server, host=host, database_url=database_url,
            workdir=workdir / ('node%d' % (index + 1)),
            # The first node brings the database up to date, the second
            # finds it so: two db_syncs at once would race to make tables.
            db_sync=index == 0, **kwargs))
    try:
        nodes[0].start()
        nodes[1].start()
        with faultproxy.FaultProxy([(node.host, node.port)
                                    for node in nodes]) as proxy:
            yield TwoNodes(nodes, proxy)
    finally:
        stopping = [threading.Thread(target=node.stop) for node in nodes]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()
        for node in nodes:
            if not node.keep_workdir:
                shutil.rmtree(node.workdir, ignore_errors=True)


def _pids():
    return [int(name) for name in os.listdir('/proc') if name.isdigit()]


def _parent(pid):
    """The parent PID of ``pid``; 0 for a process already gone."""
    try:
        with open('/proc/%d/stat' % pid) as stat:
            return int(stat.read().rsplit(')', 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0

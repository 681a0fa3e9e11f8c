"""What /proc says about processes: which one to kill mid-write."""

import os


def pids_with_open(path):
    """The PIDs of processes that have ``path`` open (a worker writing a
    spool file, for instance)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            fds = os.listdir('/proc/%s/fd' % pid)
            if any(os.readlink('/proc/%s/fd/%s' % (pid, fd)) == str(path)
                   for fd in fds):
                pids.append(int(pid))
        except OSError:
            continue
    return pids

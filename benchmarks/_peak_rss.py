"""Run a command; print its peak RSS in KiB (``ru_maxrss`` of children).

A process of its own, and a small one, so that the figure is the
command's: a child's ``ru_maxrss`` starts from its parent's peak (exec
keeps it), and a benchmark's own process grows with the libraries it
measures. The figure includes this launcher's own few MiB at the fork.
"""

import resource
import subprocess
import sys

code = subprocess.call(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)

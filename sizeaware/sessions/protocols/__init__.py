"""The upload protocols on the shared sessions: each translates its
requests into the receive flow (:mod:`sizeaware.sessions.receive`) and
its outcome back into its answers, and nothing else."""

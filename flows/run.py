"""``python -m flows.run ARGS``: ``python -m bytewax.run ARGS``, stoppable from its first instant.

The flow handles Ctrl-C and SIGTERM by ending its input and committing what is in
flight (:mod:`flows.kit.shutdown`), but only once its handlers are installed; a signal
that arrives while Python and Bytewax are still importing would otherwise raise
KeyboardInterrupt in the middle of an import. This launcher installs them before
anything else, makes a fenced copy exit at once (:func:`flows.kit.fencing.exit_when_fenced`),
then runs Bytewax's own entry point, with one thing added before its ``cli_main``: a
process of a multi-process flow waits for the processes below it to listen
(:mod:`flows.kit.cluster_start`), which spares the cluster Timely's one-second retry.
``riverbed flow run`` (and so Dagster's deployment) starts the flow through it.

A flow process that seems stuck can be asked where it is: ``kill -USR1 <pid>`` prints
every Python thread's stack to its log (:mod:`faulthandler`) and lets it go on.
"""

from __future__ import annotations

import faulthandler
import runpy
import signal
import sys

from flows.kit import shutdown


def _start_when_lower_processes_listen() -> None:
    # bytewax.run binds `from bytewax._bytewax import cli_main` when runpy executes it,
    # so the wrapper set on the extension module here is the one it calls.
    import bytewax._bytewax as engine

    from flows.kit import cluster_start

    cli_main = engine.cli_main

    def wait_then_run(**kwargs: object) -> None:
        cluster_start.wait_for_lower_processes(
            kwargs.get("addresses"),  # type: ignore[arg-type]
            kwargs.get("process_id"),  # type: ignore[arg-type]
            stop=shutdown.requested,
        )
        cli_main(**kwargs)

    engine.cli_main = wait_then_run


if __name__ == "__main__":
    shutdown.install()
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    from flows.kit import fencing  # after install: it imports Kafka and Delta clients
    from riverbed.logs import configure_logging

    # Warnings (a stop asked for while it starts) in the flow's log format already; the
    # flow sets the level of its settings as it opens (flows.kit.stream.open_stream).
    configure_logging()
    shutdown.follow_parent()
    fencing.exit_when_fenced()
    _start_when_lower_processes_listen()
    sys.argv[0] = "bytewax.run"
    runpy.run_module("bytewax.run", run_name="__main__", alter_sys=True)
    shutdown.report_stopped()

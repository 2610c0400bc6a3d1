"""Peer benchmarks: the same payments job in Riverbed and in other stream processors.

``python -m bench.peers`` (see :mod:`bench.peers.__main__`). The peers' jobs
(``quix_job.py``, ``pathway_job.py``) run in venvs of their own (:mod:`bench.peers.venvs`);
the oracle (:mod:`bench.peers.oracle`) judges every contender's output from the input.
"""

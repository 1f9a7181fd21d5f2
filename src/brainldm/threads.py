"""The one CPU thread limit of every stage: torch's intra-op threads and the BLAS/OpenMP pools.

A rule's ``threads`` reach its stage's entry point, which calls :func:`limit_threads`
first. numpy's BLAS (ridge fits, correlations) and torch (networks) are both capped, so
a job uses the cores Snakemake gave it and no more.
"""

from __future__ import annotations


def limit_threads(threads: int | None) -> None:
    """Cap torch's threads and every BLAS/OpenMP pool (threadpoolctl) at ``threads``.

    threads: CPU threads (the rule's ``threads``); None or 0 leaves the libraries'
    defaults. The limits hold for the rest of the process (one rule job is one process).
    """
    if not threads:
        return
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(int(threads))
    threadpool_limits(limits=int(threads))

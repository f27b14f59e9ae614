"""Where a latency benchmark's processes run.

On a small virtual machine, a round trip between two processes costs about
0.03 ms when both share a CPU and about 0.12 ms when the server must be woken
on the other one, and the scheduler decides afresh for every connection. Two
connections compared side by side can then differ by 3x before either runs a
query. Pinning the client to one CPU and every measured database backend to
another gives each side the same, realistic round trip: the client and the
server on different CPUs, as across a network.
"""

from __future__ import annotations

import os


def pin_apart(backend_pids: list[int]) -> dict:
    """Pin this process to the first CPU and the backends to the second.

    Returns what was done, for the benchmark's JSON; nothing is pinned on a
    machine with one CPU or without the right to move another user's process.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return {"pinned": False, "why": "one CPU"}
    client, server = cpus[0], cpus[1]
    try:
        for pid in backend_pids:
            os.sched_setaffinity(pid, {server})
    except PermissionError:
        return {"pinned": False, "why": "not allowed to move the database backends"}
    os.sched_setaffinity(0, {client})
    return {"pinned": True, "client_cpu": client, "backend_cpu": server}

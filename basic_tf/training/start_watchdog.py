"""The watchdog of a worker's start (worker_start.StartDeadline): a small process, standard
library only, that ends the worker when the cluster has not met within the deadline.

A worker waiting for its peers waits inside TensorFlow's C++ start-up with Python's GIL held,
so no thread of its own can end the wait; this process can. It is run as a script:

    python start_watchdog.py PID SECONDS LABEL PEERS_JSON

PEERS_JSON: [[name, "host:port"], ...] of the other workers. When its standard input reaches
end of file (the worker met its peers, ended, or died) it exits quietly. Otherwise, after SECONDS,
it writes one line to standard error, naming the peers that do not accept a connection and what
to check, and kills PID with SIGKILL (exit status 137).
"""
import json
import os
import select
import signal
import socket
import sys
from typing import List, Optional


def answers(address: str, timeout: float = 2.0) -> Optional[str]:
    """None when something accepts a TCP connection at host:port, else why not."""
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return None
    except OSError as e:
        return e.strerror or type(e).__name__


def expired_message(label: str, seconds: float, peers: List[List[str]]) -> str:
    """The line the watchdog writes: which peers do not answer, and what to check."""
    missing = [f"{name} at {address} ({why})" for name, address in peers
               for why in [answers(address)] if why]
    return (f"{label}: the workers of TF_CONFIG did not all start within "
            f"--worker_start_timeout={seconds:g} s"
            + (f"; not answering: {', '.join(missing)}" if missing else
               " (every address answers: a worker may be stuck or started with another "
               "TF_CONFIG)")
            + ". Start every worker with the same command and TF_CONFIG cluster, check that "
            "each address is reachable from the others and its port free")


def main(argv: List[str]) -> int:
    pid, seconds, label, peers = int(argv[1]), float(argv[2]), argv[3], json.loads(argv[4])
    readable, _, _ = select.select([sys.stdin], [], [], seconds)
    if readable:   # end of file (or anything written): the worker is past its start
        return 0
    sys.stderr.write(f"E start_watchdog] {expired_message(label, seconds, peers)}\n")
    sys.stderr.flush()
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""`python -m worker.health [--name NODE]`: is this host's Celery worker alive and consuming?

The workers' compose healthcheck. It asks the worker itself, over Celery's remote control
(`ping`), rather than looking for a process: a worker whose main loop is stuck, or that lost
its broker, does not answer. The main process answers while its pool child runs a job, so a
long job does not make a worker unhealthy.

Without `--name` it pings every worker and accepts an answer from any node on this host
(`*@<hostname>`, the `%h` of `c3 worker --name gpu0@%h`): a container runs one worker, and the
healthcheck need not repeat its name. Remote control needs `C3_CELERY_EVENTS=true` and Redis;
without them this says so and fails.

Exit status: 0 healthy, 1 no answer, 2 remote control is off. Imports no torch (it runs every
30 seconds next to a job).
"""

from __future__ import annotations

import argparse
import sys

from celery.utils.nodenames import gethostname, host_format

from service.queue import make_celery
from worker.settings import WorkerSettings, get_worker_settings

HEALTHY, NO_ANSWER, REMOTE_CONTROL_OFF = 0, 1, 2


def answering_nodes(settings: WorkerSettings, name: str | None, timeout: float) -> list[str]:
    """The worker nodes on this host (or the one named) that answered a ping in `timeout`."""
    app = make_celery(settings)
    try:
        destination = [host_format(name)] if name else None
        replies = app.control.ping(destination=destination, timeout=timeout)
    finally:
        app.close()
    answered = [node for reply in replies for node, answer in reply.items() if answer.get("ok")]
    if name:
        return answered
    return [node for node in answered if node.rpartition("@")[2] == gethostname()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", help="the worker's node name, e.g. gpu0@%%h (default: any on "
                        "this host)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default: 5)")
    args = parser.parse_args(argv)
    settings = get_worker_settings()
    if not (settings.celery_events and settings.redis_url):
        print(
            "worker.health: remote control is off (needs C3_CELERY_EVENTS=true and C3_REDIS_URL)",
            file=sys.stderr,
        )
        return REMOTE_CONTROL_OFF
    nodes = answering_nodes(settings, args.name, args.timeout)
    if not nodes:
        who = host_format(args.name) if args.name else f"any worker on {gethostname()}"
        print(f"worker.health: no answer from {who} in {args.timeout:g} s", file=sys.stderr)
        return NO_ANSWER
    print(f"worker.health: {', '.join(sorted(nodes))} answered")
    return HEALTHY


if __name__ == "__main__":
    sys.exit(main())

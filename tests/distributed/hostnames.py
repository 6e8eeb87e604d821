"""``[core] hostname_callable`` for the Celery test's workers: each local worker gets its own name, so the
task instances tell which of the two ran them (both run on one machine, with one real hostname)."""


def worker_1() -> str:
    return "expand-celery-worker-1"


def worker_2() -> str:
    return "expand-celery-worker-2"


WORKERS = {"worker_1": worker_1(), "worker_2": worker_2()}

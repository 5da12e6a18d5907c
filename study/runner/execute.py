"""Scheduling the plan: waves of independent artifacts on joblib (loky), Dask or Ray workers, or shards.

A wave holds the nodes whose parents are all in earlier waves (reference classifier, generators and
real-only classifiers first; then sample sets; then the classifiers that read them). Inside a wave every
node is independent, so any backend can run them in any order; the store's locks make concurrent runners
(other shards, other machines on a shared file system) build each artifact once.

With a cluster backend no stage ever runs in the submitting process (on a cluster: the login node). Dask
tasks are submitted as futures: joblib's dask backend runs a whole `Parallel` call in the calling process
when the cluster has one worker thread (it sizes itself by the cluster's threads and treats 1 as
sequential), which is what a cluster is left with after a worker dies. Dask resubmits a task whose worker
died to the remaining workers until more than `distributed.scheduler.allowed-failures` (3) workers have died
under it; a task it gives up on (KilledWorker) is a failed artifact with the reason, and the same command
builds it again.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from study.errors import BackendError
from study.runner.plan import Node, Plan
from study.runner.stages import Context, Outcome, build_node, fail_node

LOST = "LostOnCluster"  # the error kind of an artifact whose task the cluster gave up on


def waves(plan: Plan, nodes: list[Node]) -> list[list[Node]]:
    depth: dict[str, int] = {}
    for node in plan.nodes.values():  # parents come first in plan order
        depth[node.key] = 1 + max((depth[p] for p in node.parents), default=-1)
    out: list[list[Node]] = [[] for _ in range(1 + max((depth[n.key] for n in nodes), default=-1))]
    for node in nodes:
        out[depth[node.key]].append(node)
    return out


def shard_nodes(plan: Plan, shard: tuple[int, int] | None) -> list[Node]:
    """The nodes this process must see done: its share of the cells (every N-th) and all their ancestors.
    Nodes it does not own come last in each wave, so shards start on different artifacts and only wait
    on, or reuse, each other's work for the shared ones."""
    if shard is None:
        return list(plan.nodes.values())
    index, count = shard
    mine = [plan.cell_node[c] for i, c in enumerate(plan.cells) if i % count == index]
    mine += [
        plan.cell_diagnostics[c] for i, c in enumerate(plan.cells) if i % count == index and c in plan.cell_diagnostics
    ]
    needed: set[str] = set()
    stack = list(mine)
    while stack:
        key = stack.pop()
        if key not in needed:
            needed.add(key)
            stack.extend(plan.nodes[key].parents)
    owned = {k for i, k in enumerate(plan.nodes) if i % count == index} | set(mine)
    nodes = [n for n in plan.nodes.values() if n.key in needed]
    return sorted(nodes, key=lambda n: n.key not in owned)  # stable: plan order within each group


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextmanager
def backend_session(backend: str, jobs: int, address: str | None) -> Iterator:
    """Set up the joblib backend: loky (local processes), dask (an existing scheduler at `address`, or a
    local cluster), or ray (`address` or a local instance). Yields the joblib backend name, or for dask the
    `distributed.Client` tasks are submitted to. A backend that cannot start (its extra missing, the scheduler
    unreachable) raises BackendError."""
    if backend == "loky":
        yield "loky"
        return
    if backend == "dask":
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError as exc:
            raise BackendError("--backend dask needs the dask extra: pip install 'study[dask]'") from exc
        cluster = (
            None
            if address
            else LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None)
        )
        try:
            client = Client(address or cluster)
        except OSError as exc:  # distributed raises OSError (a TimeoutError) for a scheduler it cannot reach
            if cluster is not None:
                cluster.close()
            raise BackendError(f"--address {address}: cannot connect to the Dask scheduler ({exc})") from exc
        try:
            yield client
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
        return
    try:
        import ray
        from ray.util.joblib import register_ray
    except ImportError as exc:
        raise BackendError("--backend ray needs the ray extra: pip install 'study[ray]'") from exc
    register_ray()
    try:
        ray.init(address=address, num_cpus=None if address else jobs, ignore_reinit_error=True, log_to_driver=False)
    except ConnectionError as exc:  # ray's error for an address where no cluster answers
        raise BackendError(f"--address {address}: cannot connect to the Ray cluster ({exc})") from exc
    try:
        yield "ray"
    finally:
        ray.shutdown()


def run_nodes(
    plan: Plan,
    nodes: list[Node],
    ctx: Context,
    jobs: int = 1,
    backend: str = "loky",
    address: str | None = None,
    on_outcome: Callable[[Node, Outcome], None] = lambda n, o: None,
) -> dict[str, Outcome]:
    """Build `nodes` wave by wave. A node whose parent failed is recorded as failed without running;
    everything else still runs."""
    outcomes: dict[str, Outcome] = {}
    remote = backend != "loky" or jobs > 1
    threads = None if address else max(1, cpu_count() // max(jobs, 1))
    with backend_session(backend, jobs, address) as joblib_backend:
        for wave in waves(plan, nodes):
            runnable = []
            for node in wave:
                failed = [p for p in node.parents if p in outcomes and outcomes[p].status == "failed"]
                if failed:
                    parent = plan.nodes[failed[0]]
                    outcome = fail_node(node, ctx, f"{parent.stage} {parent.art.slug} failed")
                    outcomes[node.key] = outcome
                    on_outcome(node, outcome)
                else:
                    runnable.append(node)
            for node, outcome in _map(runnable, ctx, remote, jobs, joblib_backend, threads):
                outcomes[node.key] = outcome
                on_outcome(node, outcome)
    return outcomes


def _map(nodes: list[Node], ctx: Context, remote: bool, jobs: int, backend, threads: int | None):
    """(node, outcome) for each node as it finishes: in this process (one local job), on joblib's loky
    processes, or on the cluster (`backend` is then a dask Client, or "ray")."""
    if not nodes:
        return
    if not remote:  # in-process: inner progress bars show, tracebacks stay local
        for node in nodes:
            yield node, build_node(node, ctx, threads)
        return
    quiet = Context(ctx.grid, ctx.store_root, ctx.device, progress=False, force=ctx.force)
    if not isinstance(backend, str):
        yield from _dask_map(backend, nodes, quiet, threads)
        return
    from joblib import Parallel, delayed, parallel_config

    # parallel_config (not Parallel(backend=...)) registers joblib's ray backend on first use.
    with parallel_config(backend=backend, n_jobs=jobs):
        yield from Parallel(return_as="generator_unordered")(delayed(_build_pair)(n, quiet, threads) for n in nodes)


def _dask_map(client, nodes: list[Node], ctx: Context, threads: int | None):
    """Every node a Dask future (never run here, whatever the cluster's size), yielded as each finishes. A
    task the cluster gives up on (its worker died `allowed-failures` times: KilledWorker; or the scheduler
    lost it) is a failed outcome naming why; the others go on. Leaving early (Ctrl-C) cancels what is left."""
    from distributed import as_completed

    # Keys name the artifact (the dashboard shows them) and are unique per submission.
    futures = {client.submit(_build_pair, n, ctx, threads, key=f"study-{n.art.slug}-{uuid.uuid4().hex[:12]}"): n
               for n in nodes}  # fmt: skip
    try:
        for future in as_completed(futures):
            node = futures[future]
            try:
                yield future.result()
            except Exception as exc:  # noqa: BLE001 - build_node returns failures; this is the task lost
                reason = f"the Dask cluster lost the task ({type(exc).__name__}: {exc}); run the same command"
                yield node, fail_node(node, ctx, reason, kind=LOST)
    finally:
        client.cancel([f for f in futures if not f.done()])


def _build_pair(node: Node, ctx: Context, threads: int | None) -> tuple[Node, Outcome]:
    return node, build_node(node, ctx, threads)

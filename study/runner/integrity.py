"""Before a run computes: every finished artifact it will use is checked against its done.json (sizes and
BLAKE2b checksums, study.store). A damaged one is reported with its path, emptied and rebuilt, and so is every
finished artifact that depends on it (built from the old files, it would not match the rebuilt parent). An
artifact whose parent is not finished is stale in the same way (its parent was invalidated by a stage that
found it damaged while loading it) and is rebuilt too.

Cost: one read and BLAKE2b of every finished artifact's files per run: a quickstart store (192 artifacts, 750
files, 18.4 MiB) verifies in 0.12-0.16 s of CPU, against 9,091 s of stage compute recorded in its done.json
files (shared 2-core machine, warm page cache). Torch-free.
"""

from __future__ import annotations

from study.runner.plan import Node, Plan
from study.store import Store


def check_store(plan: Plan, store: Store, nodes: list[Node]) -> list[str]:
    """Verify the finished artifacts among `nodes` (parents before children, as the plan orders them),
    invalidate the damaged ones and their finished dependants, and return one line per invalidated artifact."""
    wanted = {n.key for n in nodes}
    bad: set[str] = set()
    report = []
    for node in plan.nodes.values():  # plan order: parents first
        if node.key not in wanted or not store.is_done(node.art):
            continue
        reason = None
        broken = [p for p in node.parents if p in bad or not store.is_done(plan.nodes[p].art)]
        if broken:
            parent = plan.nodes[broken[0]]
            reason = f"depends on {parent.stage} {parent.art.slug}, which is being rebuilt"
        else:
            reason = store.verify(node.art)
        if reason is None:
            continue
        bad.add(node.key)
        store.invalidate(node.art, reason)
        report.append(f"rebuilding {node.stage} {store.path(node.art)}: {reason}")
    return report

"""Stage 8: the lineage of the model that serves at the end (deployments ← version ← run ← dataset ←
the training set and the offline-store files of each feature view version it was built from, beside
each view's registered source), from the model registry's ``GetLineage``, printed as ``aetherctl
lineage`` prints it."""

from __future__ import annotations

from dataclasses import dataclass

from clients.sdk.models import ModelRegistryClient
from control_plane.cli.models import lineage_tree, render_tree
from control_plane.demo.progress import Say
from control_plane.demo.train import MODEL


@dataclass(frozen=True)
class FinalLineage:
    version: int
    run_id: str
    dataset_hash: str
    feature_views: tuple[str, ...]
    deployments: tuple[str, ...]


def final_lineage(address: str, say: Say) -> FinalLineage:
    with ModelRegistryClient(address) as models:
        champion = models.get_by_alias(MODEL, "champion")
        lineage = models.lineage(MODEL, int(champion.version))
    say(f"[8/8] lineage of the serving model, {MODEL} v{champion.version}:")
    for line in render_tree(lineage_tree(lineage)):
        say(f"      {line}")
    return FinalLineage(
        version=int(champion.version),
        run_id=lineage.run.run_id,
        dataset_hash=lineage.dataset.hash,
        feature_views=tuple(f"{v.name}@{v.version}" for v in lineage.feature_views),
        deployments=tuple(d.name for d in lineage.deployments),
    )

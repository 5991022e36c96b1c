"""Imports from and exports to the formats users already have.

| name | import | export |
|---|---|---|
| ``k8s`` | Kubernetes NetworkPolicy (YAML/JSON) | NetworkPolicies, one file per namespace |
| ``calico`` | Calico v3 NetworkPolicy, GlobalNetworkPolicy | GlobalNetworkPolicies |
| ``cilium`` | CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy (L3/L4) | clusterwide policies |
| ``aws-sg`` | ``describe-security-groups`` (+ network interfaces) JSON | the same JSON |

An import returns an ordinary native model (and warnings); an export returns
``{file name: content}`` (and warnings). Both are deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from detector.model.formats._derive import ImportProblem
from detector.model.formats._export import ExportProblem
from detector.model.formats.awssg import export_aws_sg, import_aws_sg
from detector.model.formats.calico import export_calico, import_calico
from detector.model.formats.cilium import export_cilium, import_cilium
from detector.model.formats.k8s import export_k8s, import_k8s
from detector.model.load import SegmentationModel

__all__ = ["EXPORTERS", "IMPORTERS", "ExportProblem", "ImportProblem"]

Importer = Callable[..., tuple[SegmentationModel, list[str]]]  # (paths, name, **options)
Exporter = Callable[..., tuple[dict[str, Any], list[str]]]  # (model, **options)

IMPORTERS: dict[str, Importer] = {
    "k8s": import_k8s,
    "calico": import_calico,
    "cilium": import_cilium,
    "aws-sg": import_aws_sg,
}
EXPORTERS: dict[str, Exporter] = {
    "k8s": export_k8s,
    "calico": export_calico,
    "cilium": export_cilium,
    "aws-sg": export_aws_sg,
}

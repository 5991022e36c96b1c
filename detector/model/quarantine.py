"""Containment: the policies that isolate one workload or host, ready to apply.

``quarantine(model, target, host=..., workload=...)`` writes, for one target, the
policies that deny everything into and out of the workload except DNS (egress to
the model's DNS zone, or kube-dns, on 53) and an optional forensics zone (both ways,
every port), with ``apply.sh`` and ``undo.sh``. Applying stays a person's decision.

How each target makes the quarantine win over the policies already there:

- Calico: a GlobalNetworkPolicy of ``order`` 0, whose final Deny comes before
  any later policy's Allow. A host (``--host``) is cut off from every endpoint
  by Deny rules on its address.
- Kubernetes and Cilium allow rules add up, so a policy cannot take back what
  another allows. ``--workload NS/NAME`` therefore takes the pod out of every
  label-based policy: ``apply.sh`` saves its labels, removes them and sets
  ``segwatch/quarantine=NAME``, which only the quarantine selects (its
  ReplicaSet starts a replacement and Services stop sending to it; the pod is
  kept for forensics). ``--workload NS:LABELS`` selects the pods as they are,
  with a warning. Cilium also cuts a host off with deny rules (which win).
- AWS: a security group with only the quarantine's rules replaces the host's
  network interface's groups (saved for the undo). AmazonProvidedDNS is not
  filtered by security groups.

:func:`suggestion` is what alerts and incidents carry for their source host.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass
from typing import Any

from detector.errors import DetectorError
from detector.model.compile import CompiledModel
from detector.model.formats import calico as calico_format
from detector.model.formats import cilium as cilium_format
from detector.model.formats import k8s as k8s_format
from detector.model.formats._derive import slug
from detector.model.formats.awssg import CIDRS_TAG
from detector.model.services import FULL, PROTOCOLS, Services

__all__ = ["TARGETS", "Quarantine", "QuarantineProblem", "Workload", "quarantine", "suggestion"]

TARGETS = ("k8s", "calico", "cilium", "aws-sg")
LABEL = "segwatch/quarantine"
DNS: Services = {"tcp": [(53, 53)], "udp": [(53, 53)]}
EVERYTHING: Services = {p: list(FULL) for p in PROTOCOLS}
TIER = "segwatch-quarantine"  # Calico: before the default tier, passing on what it does not cut
_DATASET_TARGETS = {
    "segwatch.hubble": "cilium",
    "segwatch.calico": "calico",
    "segwatch.vpcflow": "aws-sg",
}
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_POD = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_LABEL_PAIR = re.compile(r"^([A-Za-z0-9./_-]+)=([A-Za-z0-9._-]*)$")


class QuarantineProblem(DetectorError):
    """A quarantine the target cannot write (a host for NetworkPolicy, an unknown zone)."""


@dataclass(frozen=True)
class Workload:
    """``NS/NAME`` (one pod) or ``NS:key=value,...`` (the pods with those labels)."""

    namespace: str
    pod: str | None = None
    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> Workload:
        if "/" in text and ":" not in text:
            namespace, _, pod = text.partition("/")
            if _NAMESPACE.fullmatch(namespace) and _POD.fullmatch(pod):
                return cls(namespace, pod)
        elif ":" in text:
            namespace, _, rest = text.partition(":")
            pairs = [_LABEL_PAIR.match(p.strip()) for p in rest.split(",") if p.strip()]
            if _NAMESPACE.fullmatch(namespace) and pairs and all(pairs):
                found = [(m.group(1), m.group(2)) for m in pairs if m]
                return cls(namespace, labels=tuple(sorted(found)))
        raise QuarantineProblem(
            f"--workload {text!r}: write NAMESPACE/POD or NAMESPACE:key=value[,key=value]"
        )

    @property
    def name(self) -> str:
        return slug(self.pod or "-".join(f"{k.split('/')[-1]}-{v}" for k, v in self.labels))

    def match_labels(self) -> dict[str, str]:
        return {LABEL: self.name} if self.pod else dict(self.labels)


@dataclass
class Quarantine:
    files: dict[str, Any]  # file name -> policies (YAML/JSON) or script text
    warnings: list[str]


def quarantine(
    model: CompiledModel,
    target: str,
    *,
    host: str | None = None,
    workload: Workload | None = None,
    forensics: str | None = None,
) -> Quarantine:
    """The policies isolating ``host`` or ``workload`` on ``target``.

    :raises QuarantineProblem: the target cannot isolate what is asked (say why).
    """
    if (host is None) == (workload is None):
        raise QuarantineProblem("give exactly one of --host and --workload")
    doc = model.model.document
    if forensics is not None and forensics not in model.zones:
        raise QuarantineProblem(
            f"--forensics {forensics!r} is not a zone of the model "
            f"({', '.join(sorted(model.zones))})"
        )
    if host is not None:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise QuarantineProblem(f"--host {host!r} is not an IP address") from None
    dns = doc.defaults.dns.zone if doc.defaults.dns is not None else None
    warnings: list[str] = []
    if target == "k8s":
        files = _k8s(model, _needs_workload(workload, target), dns, forensics, warnings)
    elif target == "cilium":
        files = _cilium(model, host, workload, dns, forensics, warnings)
    elif target == "calico":
        files = _calico(model, host, workload, dns, forensics)
    elif target == "aws-sg":
        if host is None:
            raise QuarantineProblem(
                "--to aws-sg isolates a host (--host IP): security "
                "groups attach to network interfaces, not pods"
            )
        files = _aws(model, host, dns, forensics, warnings)
    else:
        raise QuarantineProblem(f"--to {target!r} is not one of {', '.join(TARGETS)}")
    return Quarantine(files, warnings)


def _needs_workload(workload: Workload | None, target: str) -> Workload:
    if workload is None:
        raise QuarantineProblem(
            f"--to {target} isolates pods (--workload NS/NAME or "
            "NS:LABELS): NetworkPolicy cannot select a host by address; "
            "--to calico or cilium cuts a host off"
        )
    return workload


def _zone(model: CompiledModel, name: str) -> Any:
    return next(z for z in model.model.document.zones if z.name == name)


def _relabel(workload: Workload) -> tuple[list[str], list[str]]:
    """apply/undo lines that take one pod out of every label-based policy."""
    ns, pod = shlex.quote(workload.namespace), shlex.quote(workload.pod or "")
    saved = shlex.quote(f"{workload.name}.labels")
    template = "'{{range $k, $v := .metadata.labels}}{{$k}}={{$v}} {{end}}'"
    strip = "'{{range $k, $v := .metadata.labels}}{{$k}}- {{end}}'"
    apply = [
        f"kubectl -n {ns} get pod {pod} -o go-template={template} > {saved}",
        f"kubectl -n {ns} label pod {pod} {LABEL}={workload.name} --overwrite",
        f"kubectl -n {ns} label pod {pod} $(kubectl -n {ns} get pod {pod} "
        f"-o go-template={strip} | sed 's|{LABEL}- ||')",
    ]
    undo = [
        f"kubectl -n {ns} label pod {pod} --overwrite $(cat {saved})",
        f"kubectl -n {ns} label pod {pod} {LABEL}-",
    ]
    return apply, undo


def _additive(workload: Workload, target: str, warnings: list[str]) -> None:
    if workload.pod is not None:
        warnings.append(
            f"{target}: apply.sh removes the pod's labels, which takes it out of "
            "its ReplicaSet and Services (a replacement starts; the pod stays for "
            "forensics); policies selecting its whole namespace still apply to it"
        )
    else:
        warnings.append(
            f"{target}: allow rules add up, so the policies that already select "
            "these pods still allow their traffic; --workload NS/POD takes one "
            "pod out of them (--to calico overrides them)"
        )


def _scripts(apply: list[str], undo: list[str]) -> dict[str, str]:
    head = '#!/bin/sh\n# segwatch quarantine: {}\nset -eu\ncd "$(dirname "$0")"\n'
    return {
        "apply.sh": head.format("isolate") + "\n".join(apply) + "\n",
        "undo.sh": head.format("undo") + "\n".join(undo) + "\n",
    }


def _k8s(
    model: CompiledModel,
    workload: Workload,
    dns: str | None,
    forensics: str | None,
    warnings: list[str],
) -> dict[str, Any]:
    doc = model.model.document
    to_dns = k8s_format._peers(_zone(model, dns), doc) if dns else [k8s_format.KUBE_DNS]
    egress = [
        {"to": to_dns, "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    ]
    ingress = []
    if forensics is not None:
        peers = k8s_format._peers(_zone(model, forensics), doc)
        egress.append({"to": peers})
        ingress.append({"from": peers})
    policy = {
        "apiVersion": k8s_format.API,
        "kind": "NetworkPolicy",
        "metadata": {
            "name": f"segwatch-quarantine-{workload.name}",
            "namespace": workload.namespace,
            "labels": {"app.kubernetes.io/managed-by": "segwatch"},
        },
        "spec": {
            "podSelector": {"matchLabels": workload.match_labels()},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }
    _additive(workload, "k8s", warnings)
    if workload.pod is not None:
        warnings.append(
            "k8s: if the DNS pods are isolated (export --isolate-system), they admit only "
            "the model's zones, which the relabelled pod has left: NetworkPolicy cannot add "
            "an allow to pods without isolating them, so let it in by hand (--to cilium does)"
        )
    apply, undo = _relabel(workload) if workload.pod else ([], [])
    return {
        "quarantine.yaml": [policy],
        **_scripts(
            ["kubectl apply -f quarantine.yaml", *apply],
            [*undo, "kubectl delete -f quarantine.yaml"],
        ),
    }


def _cilium(
    model: CompiledModel,
    host: str | None,
    workload: Workload | None,
    dns: str | None,
    forensics: str | None,
    warnings: list[str],
) -> dict[str, Any]:
    doc = model.model.document
    meta = {"labels": {"app.kubernetes.io/managed-by": "segwatch"}}
    dns_side: list[dict[str, Any]] = []
    if host is not None:
        if forensics is not None:
            warnings.append(
                "cilium: deny rules win over allow rules, so the forensics zone "
                f"cannot be let through to {host}; reach it from outside the "
                "cluster or --to calico"
            )
        net = str(ipaddress.ip_network(host))
        spec: dict[str, Any] = {
            "endpointSelector": {},
            "enableDefaultDeny": {"ingress": False, "egress": False},  # deny only the host
            "ingressDeny": [{"fromCIDR": [net]}],
            "egressDeny": [{"toCIDR": [net]}],
        }
        name = f"segwatch-quarantine-{slug(host.replace(':', '-'))}"
        apply: list[str] = []
        undo: list[str] = []
    else:
        assert workload is not None
        to_dns = (
            cilium_format._peers(_zone(model, dns), doc)
            if dns
            else [{"Endpoints": [cilium_format.KUBE_DNS]}]
        )
        entries = [(peer, DNS) for peer in to_dns]
        ingress_entries = []
        if forensics is not None:
            peers = cilium_format._peers(_zone(model, forensics), doc)
            entries += [(peer, EVERYTHING) for peer in peers]
            ingress_entries = [(peer, EVERYTHING) for peer in peers]
        selector = {
            "matchLabels": {cilium_format.NS_KEY: workload.namespace, **workload.match_labels()}
        }
        spec = {
            "endpointSelector": selector,
            "ingress": cilium_format._rules(ingress_entries, "from"),
            "egress": cilium_format._rules(entries, "to"),
        }
        name = f"segwatch-quarantine-{workload.namespace}-{workload.name}"
        _additive(workload, "cilium", warnings)
        apply, undo = _relabel(workload) if workload.pod else ([], [])
        # the DNS pods may be isolated (by zone labels the quarantined pod no longer has):
        # let it in on 53, without putting them in default deny if they are not
        dns_side = [
            {
                "endpointSelector": peer["Endpoints"][0],
                "enableDefaultDeny": {"ingress": False, "egress": False},
                "ingress": cilium_format._rules([({"Endpoints": [selector]}, DNS)], "from"),
            }
            for peer in to_dns
            if "Endpoints" in peer
        ]
    policies = [
        {
            "apiVersion": cilium_format.API,
            "kind": cilium_format.KINDS[1],
            "metadata": {"name": slug(f"{name}{suffix}", 253), **meta},
            "spec": one,
        }
        for suffix, one in [("", spec), *((f"-dns-{i + 1}", d) for i, d in enumerate(dns_side))]
    ]
    return {
        "quarantine.yaml": policies,
        **_scripts(
            ["kubectl apply -f quarantine.yaml", *apply],
            [*undo, "kubectl delete -f quarantine.yaml"],
        ),
    }


def _calico(
    model: CompiledModel,
    host: str | None,
    workload: Workload | None,
    dns: str | None,
    forensics: str | None,
) -> dict[str, Any]:
    doc = model.model.document
    dns_entities = (
        calico_format._entities(_zone(model, dns), doc)
        if dns
        else [
            {
                "selector": "k8s-app == 'kube-dns'",
                "namespaceSelector": "projectcalico.org/name == 'kube-system'",
            }
        ]
    )
    found = calico_format._entities(_zone(model, forensics), doc) if forensics else []
    deny = {"action": "Deny"}
    tier: list[dict[str, Any]] = []
    if host is not None:
        # every endpoint is selected, so the policy lives in a tier of its own that
        # passes on what it does not cut (in the default tier its end would deny)
        net = str(ipaddress.ip_network(host))
        ingress = [
            *({"action": "Allow", "source": {"nets": [net]}, "destination": e} for e in found),
            *(
                {
                    "action": "Allow",
                    "protocol": proto,
                    "source": {"nets": [net]},
                    "destination": {**dns_entities[0], "ports": [53]},
                }
                for proto in ("UDP", "TCP")
            ),
            {"action": "Deny", "source": {"nets": [net]}},
            {"action": "Pass"},
        ]
        egress = [
            *({"action": "Allow", "source": e, "destination": {"nets": [net]}} for e in found),
            {"action": "Deny", "destination": {"nets": [net]}},
            {"action": "Pass"},
        ]
        spec: dict[str, Any] = {
            "tier": TIER,
            "order": 0,
            "selector": "all()",
            "types": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        }
        name = f"{TIER}.{slug(host.replace(':', '-'))}"
        tier = [
            {
                "apiVersion": calico_format.API,
                "kind": "Tier",
                "metadata": {"name": TIER},
                "spec": {"order": 100},
            }
        ]
        apply, undo = [], []
    else:
        assert workload is not None
        labels = " && ".join(f"{k} == {v!r}" for k, v in sorted(workload.match_labels().items()))
        selector = f"projectcalico.org/namespace == {workload.namespace!r} && {labels}"
        egress = [
            *(
                {"action": "Allow", "protocol": proto, "destination": {**e, "ports": [53]}}
                for e in dns_entities
                for proto in ("UDP", "TCP")
            ),
            *({"action": "Allow", "destination": e} for e in found),
            deny,
        ]
        ingress = [*({"action": "Allow", "source": e} for e in found), deny]
        spec = {
            "order": 0,
            "selector": selector,
            "types": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        }
        name = f"segwatch-quarantine-{workload.namespace}-{workload.name}"
        ns, pod = shlex.quote(workload.namespace), shlex.quote(workload.pod or "")
        apply = (
            [f"kubectl -n {ns} label pod {pod} {LABEL}={workload.name} --overwrite"]
            if workload.pod
            else []
        )
        undo = [f"kubectl -n {ns} label pod {pod} {LABEL}-"] if workload.pod else []
    policy = {
        "apiVersion": calico_format.API,
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": slug(name, 253)},
        "spec": spec,
    }
    return {
        "quarantine.yaml": [*tier, policy],
        **_scripts(
            [*apply, "kubectl apply -f quarantine.yaml"],
            ["kubectl delete -f quarantine.yaml", *undo],
        ),
    }


def _aws(
    model: CompiledModel, host: str, dns: str | None, forensics: str | None, warnings: list[str]
) -> dict[str, Any]:
    ingress: list[dict[str, Any]] = []
    egress: list[dict[str, Any]] = []
    if dns is not None:
        cidrs = [str(c) for c in _zone(model, dns).cidrs if c.version == 4]
        for proto in ("udp", "tcp"):
            if cidrs:
                egress.append(
                    {
                        "IpProtocol": proto,
                        "FromPort": 53,
                        "ToPort": 53,
                        "IpRanges": [{"CidrIp": c, "Description": f"zone {dns}"} for c in cidrs],
                    }
                )
    if forensics is not None:
        ranges = [
            {"CidrIp": str(c), "Description": f"zone {forensics}"}
            for c in _zone(model, forensics).cidrs
            if c.version == 4
        ]
        if not ranges:
            warnings.append(
                f"aws-sg: zone {forensics} has no IPv4 CIDRs; the group cannot admit it"
            )
        else:
            ingress.append({"IpProtocol": "-1", "IpRanges": ranges})
            egress.append({"IpProtocol": "-1", "IpRanges": ranges})
    warnings.append(
        "aws-sg: connections already open may go on until their tracking ends "
        "(security groups are stateful); add a network ACL deny for an "
        "immediate cut"
    )
    name = f"segwatch-quarantine-{host.replace(':', '-')}"
    group = {
        "GroupId": "sg-quarantine",
        "GroupName": name,
        "Description": f"segwatch quarantine of {host}",
        "IpPermissions": ingress,
        "IpPermissionsEgress": egress,
        "Tags": [
            {"Key": "Name", "Value": name},
            {"Key": "segwatch:zone", "Value": name},
            {"Key": CIDRS_TAG, "Value": str(ipaddress.ip_network(host))},
        ],
    }
    q = shlex.quote(host)
    apply = [
        f"eni=$(aws ec2 describe-network-interfaces --filters Name=addresses.private-ip-address,"
        f"Values={q} --query 'NetworkInterfaces[0].NetworkInterfaceId' --output text)",
        'vpc=$(aws ec2 describe-network-interfaces --network-interface-ids "$eni" '
        "--query 'NetworkInterfaces[0].VpcId' --output text)",
        'aws ec2 describe-network-interfaces --network-interface-ids "$eni" --query '
        "'NetworkInterfaces[0].Groups[].GroupId' --output text > groups-before.txt",
        'echo "$eni" > eni.txt',
        f"sg=$(aws ec2 create-security-group --group-name {shlex.quote(name)} --description "
        f'{shlex.quote(str(group["Description"]))} --vpc-id "$vpc" --query GroupId --output text)',
        'echo "$sg" > group.txt',
        'aws ec2 revoke-security-group-egress --group-id "$sg" --ip-permissions '
        '\'[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]\'',
        *(
            [
                'aws ec2 authorize-security-group-ingress --group-id "$sg" --ip-permissions '
                "file://ingress.json"
            ]
            if ingress
            else []
        ),
        *(
            [
                'aws ec2 authorize-security-group-egress --group-id "$sg" --ip-permissions '
                "file://egress.json"
            ]
            if egress
            else []
        ),
        'aws ec2 modify-network-interface-attribute --network-interface-id "$eni" --groups "$sg"',
    ]
    undo = [
        'aws ec2 modify-network-interface-attribute --network-interface-id "$(cat eni.txt)" '
        "--groups $(cat groups-before.txt)",
        'aws ec2 delete-security-group --group-id "$(cat group.txt)"',
    ]
    return {
        "quarantine.json": {"SecurityGroups": [group]},
        "ingress.json": ingress,
        "egress.json": egress,
        **_scripts(apply, undo),
    }


def suggestion(ip: str, kubernetes: dict[str, Any] | None, dataset: str | None) -> dict[str, Any]:
    """The quarantine an on-call person could apply to an alert's source host: the target
    its logs come from, the pod when the flow names it, and the command."""
    target = _DATASET_TARGETS.get(dataset or "") or ("k8s" if kubernetes else "aws-sg")
    pod = ((kubernetes or {}).get("pod") or {}).get("name")
    namespace = (kubernetes or {}).get("namespace")
    out: dict[str, Any] = {"host": ip, "to": target}
    if pod and namespace:
        out["workload"] = f"{namespace}/{pod}"
        what = f"--workload {shlex.quote(out['workload'])}"
    elif target in ("k8s",):
        out["to"] = target = "calico"  # NetworkPolicy cannot select an address
        what = f"--host {shlex.quote(ip)}"
    else:
        what = f"--host {shlex.quote(ip)}"
    out["command"] = (
        f"segwatch model quarantine -m MODEL {what} --to {target} "
        f"-o quarantine-{slug(ip.replace(':', '-'))}"
    )
    return out

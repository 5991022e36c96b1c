"""Import semantics against hand-checked truth tables (README "Import and export")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from detector.model import CompiledModel, compile_model
from detector.model.formats import IMPORTERS, ImportProblem
from detector.model.formats._derive import catch_all_zones

from .conftest import flow


def imported(
    fmt: str,
    docs: list[dict[str, Any]] | dict[str, Any],
    tmp_path: Path,
    extra: list[dict[str, Any]] = (),
) -> CompiledModel:  # type: ignore[assignment]
    paths = []
    for i, content in enumerate([docs, *extra]):
        path = tmp_path / f"in{i}.{'json' if fmt == 'aws-sg' else 'yaml'}"
        path.write_text(json.dumps(content) if fmt == "aws-sg" else yaml.safe_dump_all(content))
        paths.append(str(path))
    model, _ = IMPORTERS[fmt](paths, "t")
    return compile_model(model)


def pod(ns: str, **labels: str) -> dict[str, Any]:
    return {
        "namespace": ns,
        "labels": labels,
        "namespace_labels": {
            "kubernetes.io/metadata.name": ns,
            **({"team": "ops"} if ns == "ops" else {}),
        },
    }


def allowed(model: CompiledModel, src: Any, dst: Any, port: int, proto: str = "tcp") -> bool:
    return model.place(flow(src, dst, port, proto=proto, sport=None)).verdict == "allowed"


# --- Kubernetes ------------------------------------------------------------------


def netpol(name: str, ns: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


K8S = [
    netpol(
        "db-ingress",
        "shop",
        {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"app": "api"}}}],
                    "ports": [{"port": 5432}],
                },
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"team": "ops"}},
                            "podSelector": {"matchLabels": {"app": "backup"}},
                        }
                    ],
                    "ports": [{"port": 5432}, {"port": 6000, "endPort": 6010}],
                },
                {
                    "from": [{"ipBlock": {"cidr": "10.8.0.0/16", "except": ["10.8.9.0/24"]}}],
                    "ports": [{"port": "postgres"}],
                },
            ],
        },
    ),
    netpol(
        "api-egress",
        "shop",
        {
            "podSelector": {"matchLabels": {"app": "api"}},
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": 5432}]}
            ],
        },
    ),
]
API, DB, WEB = pod("shop", app="api"), pod("shop", app="db"), pod("shop", app="web")
BACKUP, OTHER_BACKUP = pod("ops", app="backup"), pod("misc", app="backup")

K8S_TRUTH = [
    ("api -> db 5432: egress and ingress both admit", API, DB, 5432, True),
    ("api -> db 5433: the port is not admitted", API, DB, 5433, False),
    ("api -> web 80: api is egress-isolated", API, WEB, 80, False),
    ("web -> db 5432: not a named peer", WEB, DB, 5432, False),
    ("web -> api 80: api is not ingress-isolated, web not egress-isolated", WEB, API, 80, True),
    ("backup in ops -> db 6005: namespace and pod selector, endPort", BACKUP, DB, 6005, True),
    ("backup in ops -> db 6011: past endPort", BACKUP, DB, 6011, False),
    ("backup in misc -> db 5432: the namespace does not match", OTHER_BACKUP, DB, 5432, False),
    ("10.8.1.1 -> db 5432 (named port postgres): inside the ipBlock", "10.8.1.1", DB, 5432, True),
    ("10.8.9.1 -> db 5432: in the except range", "10.8.9.1", DB, 5432, False),
    ("db -> api 80: db not egress-isolated, api not ingress-isolated", DB, API, 80, True),
]


@pytest.mark.parametrize(
    ("case", "src", "dst", "port", "expected"), K8S_TRUTH, ids=[c[0] for c in K8S_TRUTH]
)
def test_kubernetes_truth_table(
    case: str, src: Any, dst: Any, port: int, expected: bool, tmp_path: Path
) -> None:
    assert allowed(imported("k8s", K8S, tmp_path), src, dst, port) is expected, case


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ports": [{"port": 5432, "protocol": "SCTP"}]}, "protocol SCTP has no equivalent"),
        ({"ports": [{"port": "web"}]}, "named port 'web' cannot be resolved"),
    ],
)
def test_kubernetes_refuses_what_it_cannot_express(
    change: dict[str, Any], message: str, tmp_path: Path
) -> None:
    policy = netpol(
        "p", "shop", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}], **change}]}
    )
    with pytest.raises(ImportProblem, match=message) as caught:
        imported("k8s", [policy], tmp_path)
    assert "NetworkPolicy shop/p" in str(caught.value)


def test_kubernetes_refuses_other_kinds(tmp_path: Path) -> None:
    with pytest.raises(ImportProblem, match=r"is not a networking\.k8s\.io/v1 NetworkPolicy"):
        imported(
            "k8s", [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}}], tmp_path
        )


# Whole cluster: every pod is in a zone, as every pod is a member of its namespace. A
# policy in shop admits gateway pods of the payments namespace (named only as a peer) to
# db; misc is a namespace no policy names.
WHOLE_K8S = [
    netpol(
        "db-ingress",
        "shop",
        {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "payments"}
                            },
                            "podSelector": {"matchLabels": {"app": "gateway"}},
                        }
                    ],
                    "ports": [{"port": 5432}],
                }
            ],
        },
    )
]
GATEWAY, BATCH = pod("payments", app="gateway"), pod("payments", app="batch")
MISC, MISC_2 = pod("misc", app="x"), pod("misc", app="y")

WHOLE_TRUTH = [
    ("gateway (payments) -> db 5432: the named peer", GATEWAY, DB, 5432, "allowed", "payments.app-gateway"),
    ("batch (payments) -> db 5432: the peer namespace's other pods", BATCH, DB, 5432, "violation", "payments"),
    ("batch (payments) -> web 80: web is not isolated", BATCH, WEB, 80, "allowed", "payments"),
    ("misc -> db 5432: a namespace no policy names", MISC, DB, 5432, "violation", "cluster"),
    ("misc -> web 80: neither side isolated", MISC, WEB, 80, "allowed", "cluster"),
    ("misc -> misc 80: inside the cluster zone", MISC, MISC_2, 80, "allowed", "cluster"),
    ("db -> misc 80: db is not egress-isolated", DB, MISC, 80, "allowed", "shop.app-db"),
    ("batch (payments) -> misc 80", BATCH, MISC, 80, "allowed", "payments"),
    ("gateway (misc) -> db 5432: the peer is named by namespace too",
     pod("misc", app="gateway"), DB, 5432, "violation", "cluster"),
]  # fmt: skip


def verdict(model: CompiledModel, src: Any, dst: Any, port: int) -> tuple[str, str | None]:
    placed = model.place(flow(src, dst, port, sport=None))
    return placed.verdict, placed.source_zone


@pytest.mark.parametrize(
    ("case", "src", "dst", "port", "expected", "zone"), WHOLE_TRUTH, ids=[c[0] for c in WHOLE_TRUTH]
)
def test_kubernetes_places_every_pod_of_the_cluster(
    case: str, src: Any, dst: Any, port: int, expected: str, zone: str, tmp_path: Path
) -> None:
    assert verdict(imported("k8s", WHOLE_K8S, tmp_path), src, dst, port) == (expected, zone), case


def test_an_import_names_its_catch_all_zones_and_why(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump_all(WHOLE_K8S))
    model, _ = IMPORTERS["k8s"]([str(path)], "t")
    made = dict(catch_all_zones(model))
    assert set(made) == {"shop", "payments", "cluster"}
    assert "policies" in made["shop"] and "as a peer" in made["payments"]
    assert "every other namespace" in made["cluster"]


# --- Calico ------------------------------------------------------------------------


def calico(kind: str, name: str, spec: dict[str, Any], ns: str | None = None) -> dict[str, Any]:
    meta = {"name": name, **({"namespace": ns} if ns else {})}
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta, "spec": spec}


CALICO = [
    calico(
        "GlobalNetworkPolicy",
        "deny-ssh-first",
        {
            "order": 10,
            "selector": "app == 'db'",
            "ingress": [
                {"action": "Log", "protocol": "TCP", "destination": {"ports": [22]}},
                {"action": "Deny", "protocol": "TCP", "destination": {"ports": [22]}},
            ],
        },
    ),
    calico(
        "NetworkPolicy",
        "db",
        {
            "order": 20,
            "selector": "app == 'db'",
            "ingress": [
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "source": {"selector": "app in {'api', 'admin'}"},
                    "destination": {"ports": [22, "5432:5433"]},
                },
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "source": {"nets": ["10.8.0.0/16"], "notNets": ["10.8.9.0/24"]},
                    "destination": {"ports": [5432]},
                },
                {"action": "Pass", "source": {"selector": "app == 'legacy'"}},
            ],
        },
        ns="shop",
    ),
]
ADMIN, LEGACY = pod("shop", app="admin"), pod("shop", app="legacy")

CALICO_TRUTH = [
    ("api -> db 5433: Allow with a port range", API, DB, 5433, True),
    ("admin -> db 22: the lower order Deny wins (Log goes on)", ADMIN, DB, 22, False),
    ("web -> db 5432: no rule allows: end of policies denies", WEB, DB, 5432, False),
    ("legacy -> db 9999: Pass hands over to the profile, which allows", LEGACY, DB, 9999, True),
    ("10.8.1.1 -> db 5432: nets", "10.8.1.1", DB, 5432, True),
    ("10.8.9.1 -> db 5432: notNets", "10.8.9.1", DB, 5432, False),
    ("db -> web 80: no policy selects db for egress or web for ingress", DB, WEB, 80, True),
]


@pytest.mark.parametrize(
    ("case", "src", "dst", "port", "expected"), CALICO_TRUTH, ids=[c[0] for c in CALICO_TRUTH]
)
def test_calico_truth_table(
    case: str, src: Any, dst: Any, port: int, expected: bool, tmp_path: Path
) -> None:
    assert allowed(imported("calico", CALICO, tmp_path), src, dst, port) is expected, case


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"action": "Allow", "source": {"notSelector": "a == 'b'"}}, "notSelector not supported"),
        (
            {"action": "Allow", "source": {"serviceAccounts": {"names": ["x"]}}},
            "serviceAccounts not supported",
        ),
        ({"action": "Allow", "http": {"methods": ["GET"]}}, "http not supported"),
        ({"action": "Allow", "protocol": "TCP", "source": {"ports": [1234]}}, "source port"),
        (
            {"action": "Allow", "source": {"selector": "app contains 'x'"}},
            "contains, starts with and ends with are not supported",
        ),
        ({"action": "Reject"}, "'Reject' is not Allow, Deny, Log or Pass"),
    ],
)
def test_calico_refuses_the_unsupported_with_where(
    rule: dict[str, Any], message: str, tmp_path: Path
) -> None:
    policy = calico("GlobalNetworkPolicy", "p", {"selector": "all()", "ingress": [rule]})
    with pytest.raises(ImportProblem, match=message) as caught:
        imported("calico", [policy], tmp_path)
    assert "GlobalNetworkPolicy p" in str(caught.value) and "ingress[0]" in str(caught.value)


def test_calico_refuses_other_tiers(tmp_path: Path) -> None:
    policy = calico("GlobalNetworkPolicy", "security.p", {"tier": "security", "selector": "all()"})
    with pytest.raises(ImportProblem, match="only the default tier"):
        imported("calico", [policy], tmp_path)


# Whole cluster, Calico: the same cluster as WHOLE_K8S, the peer namespace named by a
# namespace selector on projectcalico.org/name.
WHOLE_CALICO = [
    calico(
        "NetworkPolicy",
        "db",
        {
            "selector": "app == 'db'",
            "ingress": [
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "source": {
                        "selector": "app == 'gateway'",
                        "namespaceSelector": "projectcalico.org/name == 'payments'",
                    },
                    "destination": {"ports": [5432]},
                }
            ],
        },
        ns="shop",
    )
]


@pytest.mark.parametrize(
    ("case", "src", "dst", "port", "expected", "zone"), WHOLE_TRUTH, ids=[c[0] for c in WHOLE_TRUTH]
)
def test_calico_places_every_pod_of_the_cluster(
    case: str, src: Any, dst: Any, port: int, expected: str, zone: str, tmp_path: Path
) -> None:
    model = imported("calico", WHOLE_CALICO, tmp_path)
    got, zone_of = verdict(model, src, dst, port)
    assert got == expected, case
    assert zone_of is not None and zone_of.split(".")[0] == zone.split(".")[0], case


# --- AWS security groups --------------------------------------------------------------

SGS = {
    "SecurityGroups": [
        {
            "GroupId": "sg-web",
            "GroupName": "web",
            "IpPermissions": [
                {
                    "IpProtocol": "tcp",
                    "FromPort": 443,
                    "ToPort": 443,
                    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                }
            ],
            "IpPermissionsEgress": [
                {
                    "IpProtocol": "tcp",
                    "FromPort": 8080,
                    "ToPort": 8080,
                    "UserIdGroupPairs": [{"GroupId": "sg-app"}],
                }
            ],
        },
        {
            "GroupId": "sg-app",
            "GroupName": "app",
            "IpPermissions": [
                {
                    "IpProtocol": "tcp",
                    "FromPort": 8080,
                    "ToPort": 8090,
                    "UserIdGroupPairs": [{"GroupId": "sg-web"}],
                },
                {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "10.50.0.0/16"}]},
            ],
            "IpPermissionsEgress": [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
        },
        {
            "GroupId": "sg-admin",
            "GroupName": "admin",
            "IpPermissions": [],
            "IpPermissionsEgress": [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
        },
    ]
}
ENIS = {
    "NetworkInterfaces": [
        {
            "NetworkInterfaceId": "eni-1",
            "PrivateIpAddresses": [{"PrivateIpAddress": "10.0.1.10"}],
            "Groups": [{"GroupId": "sg-web"}],
        },
        {
            "NetworkInterfaceId": "eni-2",
            "PrivateIpAddresses": [{"PrivateIpAddress": "10.0.2.20"}],
            "Groups": [{"GroupId": "sg-app"}],
        },
        {
            "NetworkInterfaceId": "eni-3",
            "PrivateIpAddresses": [{"PrivateIpAddress": "10.0.2.21"}],
            "Groups": [{"GroupId": "sg-app"}, {"GroupId": "sg-admin"}],
        },
    ]
}

SG_TRUTH = [
    (
        "internet -> web 443: 0.0.0.0/0 in, sender not in a group",
        "203.0.113.5",
        "10.0.1.10",
        443,
        True,
    ),
    ("internet -> web 22", "203.0.113.5", "10.0.1.10", 22, False),
    ("web -> app 8080: web's egress and app's ingress", "10.0.1.10", "10.0.2.20", 8080, True),
    (
        "web -> app 8085: app admits 8080-8090 but web sends only 8080",
        "10.0.1.10",
        "10.0.2.20",
        8085,
        False,
    ),
    ("app -> web 8080: web admits only 443 from anywhere", "10.0.2.20", "10.0.1.10", 8080, False),
    ("10.50.1.1 -> app 22: all protocols from the CIDR", "10.50.1.1", "10.0.2.20", 22, True),
    ("web -> app+admin 8080: the groups' rules add up", "10.0.1.10", "10.0.2.21", 8080, True),
    ("app+admin -> internet 80", "10.0.2.21", "198.51.100.1", 80, True),
    ("web -> internet 80: web's egress names only app", "10.0.1.10", "198.51.100.1", 80, False),
]


@pytest.mark.parametrize(
    ("case", "src", "dst", "port", "expected"), SG_TRUTH, ids=[c[0] for c in SG_TRUTH]
)
def test_security_group_truth_table(
    case: str, src: Any, dst: Any, port: int, expected: bool, tmp_path: Path
) -> None:
    assert allowed(imported("aws-sg", SGS, tmp_path, [ENIS]), src, dst, port) is expected, case


def test_security_groups_refuse_prefix_lists(tmp_path: Path) -> None:
    sgs = {
        "SecurityGroups": [
            {
                "GroupId": "sg-1",
                "GroupName": "a",
                "Tags": [{"Key": "segwatch:cidrs", "Value": "10.0.0.0/24"}],
                "IpPermissions": [
                    {
                        "IpProtocol": "tcp",
                        "FromPort": 1,
                        "ToPort": 2,
                        "PrefixListIds": [{"PrefixListId": "pl-1"}],
                    }
                ],
            }
        ]
    }
    with pytest.raises(ImportProblem, match="prefix lists are not supported"):
        imported("aws-sg", sgs, tmp_path)

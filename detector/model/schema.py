"""The native segmentation model (``apiVersion: segwatch/v1``) as frozen pydantic models.

A model file declares zones (CIDRs and/or Kubernetes selectors, with tags), the
flows allowed between them, and the defaults (deny, the ``internet``
pseudo-zone, the DNS rule). Checks that need the whole model (unknown zone
references, duplicates, overlapping CIDRs) are in :mod:`detector.model.load`.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_serializer,
    model_validator,
)

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _namespace_name(value: str) -> str:
    """A Kubernetes namespace name (an RFC 1123 label): also what keeps it safe as the
    file name an export writes."""
    if not _DNS_LABEL.fullmatch(value):
        raise ValueError(
            f"{value[:80]!r} is not a Kubernetes namespace name (lowercase letters, "
            "digits and '-', at most 63, starting and ending alphanumeric)"
        )
    return value


__all__ = [
    "ANY_ZONE",
    "API_VERSION",
    "INTERNET",
    "LOCAL_NETWORKS",
    "SENSITIVITY_ORDER",
    "BusinessHours",
    "Defaults",
    "DnsRule",
    "Flow",
    "LabelExpression",
    "LabelSelector",
    "Metadata",
    "ModelDocument",
    "PodSelector",
    "PortRange",
    "Protocol",
    "Sensitivity",
    "Zone",
    "ZoneTags",
    "inside",
]

API_VERSION = "segwatch/v1"
INTERNET = "internet"  # the pseudo-zone of public addresses that are in no zone
# Addresses that never belong to the Internet. Documentation ranges (TEST-NET,
# 2001:db8::/32) do: they stand in for public addresses in examples and tests.
LOCAL_NETWORKS: tuple[str, ...] = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8",
)  # fmt: skip
ANY_ZONE = "*"  # in flows: every declared zone
Protocol = Literal["tcp", "udp", "icmp", "any"]
Sensitivity = Literal["low", "medium", "high", "restricted"]
SENSITIVITY_ORDER: dict[str, int] = {"low": 0, "medium": 1, "high": 2, "restricted": 3}
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_NAME = r"^[a-z0-9]([a-z0-9_.-]{0,61}[a-z0-9])?$"
ZoneName = Annotated[str, Field(pattern=_NAME)]
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")  # fmt: skip


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def _network(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return ipaddress.ip_network(value.strip(), strict=True)
        except ValueError as exc:
            text = str(exc)
            if "host bits set" in text:
                raise ValueError(
                    f"{value!r} has host bits set: write the network "
                    f"({ipaddress.ip_network(value.strip(), strict=False)})"
                ) from None
            raise ValueError(f"{value!r} is not a valid network") from None
    return value


def inside(inner: Any, outer: Any) -> bool:
    """Whether network ``inner`` lies in ``outer`` (False across address families)."""
    return bool(inner.version == outer.version and inner.subnet_of(outer))


Network = Annotated[
    ipaddress.IPv4Network | ipaddress.IPv6Network,
    BeforeValidator(_network),
    PlainSerializer(str, return_type=str),
]


class PortRange(_Frozen):
    """An inclusive port range; written ``8080`` or ``"9000-9010"`` in files."""

    first: int = Field(ge=0, le=65535)
    last: int = Field(ge=0, le=65535)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a port")
        if isinstance(value, int):
            return {"first": value, "last": value}
        if isinstance(value, str):
            lo, sep, hi = value.strip().partition("-")
            if not (lo.isdigit() and (not sep or hi.isdigit())):
                raise ValueError(f"{value!r} is not a port or a range like '9000-9010'")
            first, last = int(lo), int(hi or lo)
            if first > last:
                raise ValueError(f"port range {first}-{last} ends before it starts")
            return {"first": first, "last": last}
        if isinstance(value, dict) and value.get("first", 0) > value.get("last", 65535):
            raise ValueError(f"port range {value['first']}-{value['last']} ends before it starts")
        return value

    @model_serializer
    def _as_written(self) -> int | str:
        return self.first if self.first == self.last else f"{self.first}-{self.last}"

    def __str__(self) -> str:
        return str(self._as_written())


class LabelExpression(_Frozen):
    """A Kubernetes ``matchExpressions`` entry."""

    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelExpression:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs values")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self


class LabelSelector(_Frozen):
    """Kubernetes label-selector semantics: every label and every expression must hold.

    An empty selector selects everything.
    """

    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")
    match_expressions: tuple[LabelExpression, ...] = Field(default=(), alias="matchExpressions")

    @field_validator("match_labels")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _LABEL_KEY.match(key):
                raise ValueError(f"{key!r} is not a valid label key")
        return value

    def matches(self, labels: dict[str, str]) -> bool:
        """Does a set of labels satisfy this selector?"""
        for key, want in self.match_labels.items():
            if labels.get(key) != want:
                return False
        for expr in self.match_expressions:
            have = labels.get(expr.key)
            op = expr.operator
            if op == "In" and have not in expr.values:
                return False
            if op == "NotIn" and have is not None and have in expr.values:
                return False
            if op == "Exists" and have is None:
                return False
            if op == "DoesNotExist" and have is not None:
                return False
        return True

    @property
    def size(self) -> int:
        """How many requirements: the more, the more specific."""
        return len(self.match_labels) + len(self.match_expressions)


class PodSelector(_Frozen):
    """Which Kubernetes workloads belong to a zone.

    All given parts must hold: the pod's namespace is one of ``namespaces``
    (if given), its namespace's labels match ``namespaceSelector`` (if given),
    its own labels match ``podSelector`` (if given).
    """

    namespaces: tuple[Annotated[str, AfterValidator(_namespace_name)], ...] = ()
    namespace_selector: LabelSelector | None = Field(default=None, alias="namespaceSelector")
    pod_selector: LabelSelector | None = Field(default=None, alias="podSelector")

    @model_validator(mode="after")
    def _not_empty(self) -> PodSelector:
        if not self.namespaces and self.namespace_selector is None and self.pod_selector is None:
            raise ValueError(
                "a selector needs namespaces, namespaceSelector or podSelector "
                "(an empty one would select every pod)"
            )
        return self

    def matches(
        self, namespace: str | None, labels: dict[str, str], namespace_labels: dict[str, str]
    ) -> bool:
        """Does a workload (namespace, pod labels, namespace labels) belong here?"""
        if self.namespaces and namespace not in self.namespaces:
            return False
        if self.namespace_selector is not None:
            ns_labels = dict(namespace_labels)
            if namespace is not None:  # as Kubernetes sets it on every namespace
                ns_labels.setdefault("kubernetes.io/metadata.name", namespace)
            if not self.namespace_selector.matches(ns_labels):
                return False
        return self.pod_selector is None or self.pod_selector.matches(labels)

    @property
    def specificity(self) -> int:
        """More requirements win when several zones' selectors match one pod."""
        return (
            (1 if self.namespaces else 0)
            + (self.namespace_selector.size if self.namespace_selector else 0)
            + (self.pod_selector.size if self.pod_selector else 0)
        )


class BusinessHours(_Frozen):
    """When a zone is expected to be busy (used by the off-hours detector)."""

    timezone: str = "UTC"
    days: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")
    start: time = time(8, 0)
    end: time = time(19, 0)
    holidays: tuple[date, ...] = ()

    @field_validator("timezone")
    @classmethod
    def _zone_exists(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. Europe/Berlin)") from None
        return value

    @model_validator(mode="after")
    def _ordered(self) -> BusinessHours:
        if self.start >= self.end:
            raise ValueError(f"hours end ({self.end}) must be after start ({self.start})")
        return self


class ZoneTags(BaseModel):
    """Known tags are typed; any other key is kept as a free-form string tag."""

    model_config = ConfigDict(frozen=True, extra="allow")

    tier: int | None = Field(default=None, ge=0, le=9)
    sensitivity: Sensitivity = "low"
    environment: str | None = None
    tenant: str | None = None
    compliance: tuple[str, ...] = ()
    internet_facing: bool = False

    @property
    def extra(self) -> dict[str, Any]:
        return dict(self.__pydantic_extra__ or {})


class Zone(_Frozen):
    """A named set of addresses and/or workloads with tags."""

    name: ZoneName
    description: str = ""
    owner: str = ""
    cidrs: tuple[Network, ...] = ()
    kubernetes: tuple[PodSelector, ...] = ()
    within: ZoneName | None = Field(
        default=None,
        description="A zone whose CIDRs contain this zone's: nesting is declared, not guessed.",
    )
    tags: ZoneTags = Field(default_factory=ZoneTags)
    mode: Literal["enforce", "monitor"] = "enforce"
    hours: BusinessHours | None = None

    @field_validator("name")
    @classmethod
    def _reserved(cls, value: str) -> str:
        if value == INTERNET:
            raise ValueError(f"{INTERNET!r} is the built-in pseudo-zone; choose another name")
        return value

    @model_validator(mode="after")
    def _has_members(self) -> Zone:
        if not self.cidrs and not self.kubernetes:
            raise ValueError(f"zone {self.name!r} has no members: give cidrs and/or kubernetes")
        return self


def _zone_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


ZoneRefs = Annotated[tuple[str, ...], BeforeValidator(_zone_list)]


def _aware(value: Any) -> Any:
    """``expires`` as a date means the end of that day, UTC."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime.combine(value, time(23, 59, 59), UTC)
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class Flow(_Frozen):
    """An allow rule: connections *initiated* from ``from`` to ``to`` (replies are implied).

    ``bidirectional`` allows initiation both ways; ``one_way`` states that the
    reverse must never be allowed (lint checks that no rule does).
    """

    id: str = Field(default="", pattern=r"^$|^[a-z0-9]([a-z0-9_.:-]{0,126}[a-z0-9])?$")
    source: ZoneRefs = Field(alias="from")
    destination: ZoneRefs = Field(alias="to")
    protocol: Protocol = "tcp"
    ports: tuple[PortRange, ...] = ()
    one_way: bool = False
    bidirectional: bool = False
    description: str = ""
    owner: str = ""
    ticket: str = ""
    expires: Annotated[datetime | None, BeforeValidator(_aware)] = None

    @model_validator(mode="after")
    def _consistent(self) -> Flow:
        if not self.source or not self.destination:
            raise ValueError("a flow needs at least one zone in from and in to")
        if self.one_way and self.bidirectional:
            raise ValueError("a flow cannot be both one_way and bidirectional")
        if self.protocol == "icmp" and self.ports:
            raise ValueError("icmp flows take no ports")
        return self

    def describe(self) -> str:
        """``app -> db tcp/5432`` for messages."""
        ports = ",".join(str(p) for p in self.ports) or "any"
        arrow = "<->" if self.bidirectional else "->"
        proto = self.protocol if self.protocol != "any" else "any protocol"
        where = f"{proto}/{ports}" if self.protocol in ("tcp", "udp") else proto
        return f"{','.join(self.source)} {arrow} {','.join(self.destination)} {where}"


class DnsRule(_Frozen):
    """Let every zone reach DNS in ``zone`` (53/udp and 53/tcp): the rule people forget."""

    zone: ZoneName
    ports: tuple[PortRange, ...] = (PortRange(first=53, last=53),)


class Defaults(_Frozen):
    """What holds where no flow says otherwise."""

    action: Literal["deny", "allow"] = "deny"
    intra_zone: Literal["allow", "deny"] = Field(
        default="allow", description="Traffic inside one zone."
    )
    internet: bool = Field(
        default=True,
        description="Public addresses in no zone are the 'internet' pseudo-zone "
        "(otherwise: unmanaged).",
    )
    dns: DnsRule | None = None


class Metadata(_Frozen):
    name: ZoneName
    description: str = ""
    owner: str = ""
    version: str = ""


class ModelDocument(_Frozen):
    """One model file."""

    api_version: Literal["segwatch/v1"] = Field(alias="apiVersion")
    kind: Literal["SegmentationModel"] = "SegmentationModel"
    metadata: Metadata
    defaults: Defaults = Field(default_factory=Defaults)
    zones: tuple[Zone, ...] = Field(min_length=1)
    flows: tuple[Flow, ...] = ()

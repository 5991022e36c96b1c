"""Where the worker's output goes: one small contract (:class:`~streams.sinks.base.Sink`)
and one module per kind of target, registered by kind.

========================  =====================================================
kind                      module
========================  =====================================================
``elasticsearch-events``  :mod:`streams.sinks.bulk` (create into the data stream)
``elasticsearch-docs``    :mod:`streams.sinks.documents` (alerts, incidents by id)
``json``                  :mod:`streams.sinks.signed_json` (HMAC-signed incident)
``slack``                 :mod:`streams.sinks.slack` (one message per incident)
``pagerduty``             :mod:`streams.sinks.pagerduty` (Events API v2)
========================  =====================================================

Each is driven by :func:`~streams.sinks.base.deliver` under the worker's one
:class:`~streams.retry.RetryPolicy`, and each gets its own stage (its own
consumer group), so a target that is down holds only its own backlog — in Kafka.
"""

from __future__ import annotations

from streams.sinks import bulk, documents, pagerduty, signed_json, slack
from streams.sinks.base import SINKS, Item, Sink, Written, deliver, make_sink

__all__ = ["SINKS", "Item", "Sink", "Written", "bulk", "deliver", "documents", "make_sink",
           "pagerduty", "signed_json", "slack"]  # fmt: skip

"""The library services embed to record audit events: :class:`AuditTrail`.

Redaction of secrets, IP masking and trace-id capture happen here, in the producing
process, before an event is encoded and sent to the ledger topic; events the broker cannot
take yet wait in a durable disk spool (:mod:`.spool`) when the trail has one.
"""

from baldur_audit.schemas.errors import AuditError, ConfigError, InvalidEvent
from baldur_audit.schemas.event import Actor

from .mask import mask_client_ip, mask_ip
from .redact import Redactor, is_sensitive_key
from .spool import SpoolError, SpoolFull, SpoolLocked
from .trace import make_traceparent, resolve_trace_id
from .trail import NIL_EVENT_ID, AuditTrail, DeliveryBacklog, TrailClosed, TrailStats

__all__ = [
    "NIL_EVENT_ID",
    "Actor",
    "AuditError",
    "AuditTrail",
    "ConfigError",
    "DeliveryBacklog",
    "InvalidEvent",
    "Redactor",
    "SpoolError",
    "SpoolFull",
    "SpoolLocked",
    "TrailClosed",
    "TrailStats",
    "is_sensitive_key",
    "make_traceparent",
    "mask_client_ip",
    "mask_ip",
    "resolve_trace_id",
]

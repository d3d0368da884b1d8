"""``baldur-audit serve``: a read-only HTTP API (``/api/v1``, with its OpenAPI document) and a
server-rendered web viewer for incident reviews and auditors — the only importer of
Starlette, uvicorn and Jinja2.

``access`` (who may ask: hashed bearer tokens, or a trusted proxy's identity header),
``render`` (hostile producer content made safe to show: markers, clipping, a bounded JSON
diff), ``reads`` (the ledger reads, on read-only connections), ``openapi`` (the API's
document), ``app`` (routes, security headers, the request log), ``server`` (uvicorn on a
socket bound before it starts). Templates and the stylesheet are package data.
"""

from __future__ import annotations

from .access import Access, hash_token, parse_tokens
from .app import ViewerConfig, create_app
from .reads import LagProbe, LedgerReads
from .server import serve_forever

__all__ = [
    "Access",
    "LagProbe",
    "LedgerReads",
    "ViewerConfig",
    "create_app",
    "hash_token",
    "parse_tokens",
    "serve_forever",
]

"""The OpenAPI 3.1 document of the read-only API (``/api/v1/openapi.json``)."""

from __future__ import annotations

from typing import Any

_FILTERS: list[dict[str, Any]] = [
    {"name": "target", "description": "Configuration key or resource; `*` wildcards."},
    {
        "name": "actor",
        "description": "Who made the change (or the identity behind a pseudonym); `*` wildcards.",
    },
    {"name": "action", "description": "create, update, delete, apply, rollback, ..."},
    {"name": "trace_id", "description": "W3C trace id (32 hex digits)."},
    {
        "name": "since",
        "description": "From this time: ISO 8601 (naive is UTC), `now`, or a duration ago (`2h`).",
    },
    {"name": "until", "description": "Up to this time (exclusive)."},
    {
        "name": "before",
        "description": "What changed right before this time (with `window`); not with since/until.",
    },
    {"name": "window", "description": "The window before `before` (default `1h`): `30m`, `1h30m`, `2d`."},
    {"name": "kind", "description": "event (default), rejected, duplicate, schema or all."},
    {
        "name": "after_seq",
        "description": "Keyset paging: the first `limit` matches after this seq, in seq order "
        "(without it: the newest `limit` matches, in time order).",
        "schema": {"type": "integer", "minimum": 0},
    },
    {
        "name": "limit",
        "description": "Entries per page (1-1000, default 100).",
        "schema": {"type": "integer"},
    },
]
_SEQ = {"name": "seq", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
_ERROR = {"$ref": "#/components/schemas/Error"}


def _responses(ok: dict[str, Any], *codes: int) -> dict[str, Any]:
    described = {
        400: "A malformed parameter.",
        401: "No or a wrong bearer token (or no identity from the trusted proxy).",
        403: "Not from the trusted proxy.",
        404: "Not found.",
        409: "The ledger was changed: the evidence does not verify.",
        503: "The ledger database is unavailable.",
    }
    found = {"200": ok}
    for code in (401, 403, 503, *codes):
        found[str(code)] = {
            "description": described[code],
            "content": {"application/json": {"schema": _ERROR}},
        }
    return found


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI document."""
    entry = {"$ref": "#/components/schemas/Entry"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "baldur-audit ledger API",
            "version": "1",
            "description": "Read-only access to a tamper-evident audit ledger: its entries with the "
            "filters of `baldur-audit log`, evidence bundles (the bytes of `baldur-audit prove`), "
            "the checkpoint verifier keys and the ledger's status.",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": {
            "/entries": {
                "get": {
                    "summary": "Entries matching the filters, one page",
                    "parameters": [
                        {"in": "query", "schema": {"type": "string"}, **item} for item in _FILTERS
                    ],
                    "responses": _responses(
                        {
                            "description": "A page of entries, how many match in all, and the "
                            "`after_seq` of the next page (null: none, or not paging by seq).",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "entries": {"type": "array", "items": entry},
                                            "matched": {"type": "integer"},
                                            "matched_more": {
                                                "type": "boolean",
                                                "description": "More than `matched` (10,000) match: "
                                                "matches are counted up to that many.",
                                            },
                                            "next_after_seq": {"type": ["integer", "null"]},
                                        },
                                    }
                                }
                            },
                        },
                        400,
                    ),
                }
            },
            "/entries/{seq}": {
                "get": {
                    "summary": "One entry, with its before and after values",
                    "parameters": [_SEQ],
                    "responses": _responses(
                        {"description": "The entry.", "content": {"application/json": {"schema": entry}}},
                        400,
                        404,
                    ),
                }
            },
            "/entries/{seq}/bundle": {
                "get": {
                    "summary": "The entry's offline evidence bundle (the same bytes as `prove SEQ`)",
                    "description": "Check it offline: `baldur-audit check-proof --public-key KEYS BUNDLE`.",
                    "parameters": [_SEQ],
                    "responses": _responses(
                        {
                            "description": "The inclusion bundle.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        400,
                        404,
                        409,
                    ),
                }
            },
            "/export": {
                "get": {
                    "summary": "An export of a seq range or time window with its signed manifest (tar.gz)",
                    "description": "The folder `baldur-audit export` writes, as a gzipped tar; check it "
                    "offline with `baldur-audit check-export FOLDER --public-key KEYS`. At most 100,000 "
                    "entries at once; the server needs the checkpoint signing key.",
                    "parameters": [
                        {"name": name, "in": "query", "schema": {"type": kind}, "description": text}
                        for name, kind, text in (
                            ("first_seq", "integer", "From this seq (or `since`)."),
                            ("last_seq", "integer", "To this seq (or `until`)."),
                            ("since", "string", "From the first entry stamped at or after this time."),
                            ("until", "string", "To the last entry stamped before this time."),
                            ("format", "string", "ndjson (default) or csv."),
                        )
                    ],
                    "responses": _responses(
                        {"description": "The export.", "content": {"application/gzip": {}}}, 400, 404, 409
                    ),
                }
            },
            "/keys": {
                "get": {
                    "summary": "The checkpoint verifier keys (as `keys public` prints them)",
                    "responses": _responses(
                        {"description": "One key per line.", "content": {"text/plain": {}}}, 404
                    ),
                }
            },
            "/status": {
                "get": {
                    "summary": "Head, lag, newest checkpoint and the last recorded verify result",
                    "responses": _responses(
                        {
                            "description": "The status; `banner.state` is intact, tampered or unverified.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    ),
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
                },
                "Entry": {
                    "type": "object",
                    "description": "A ledger entry as `baldur-audit log --json` prints it.",
                    "properties": {
                        "seq": {"type": "integer"},
                        "kind": {"enum": ["event", "duplicate", "rejected", "schema"]},
                        "occurred_at": {"type": ["string", "null"], "format": "date-time"},
                        "kafka_timestamp": {"type": "string", "format": "date-time"},
                        "actor": {"type": ["string", "null"]},
                        "actor_type": {"type": ["string", "null"]},
                        "action": {"type": ["string", "null"]},
                        "target": {"type": ["string", "null"]},
                        "before": {},
                        "after": {},
                        "reason": {"type": ["string", "null"]},
                        "source": {"type": ["string", "null"]},
                        "trace_id": {"type": ["string", "null"]},
                        "client_ip": {"type": ["string", "null"]},
                        "attributes": {"type": ["object", "null"]},
                        "pruned": {"type": "boolean"},
                        "identity": {"type": ["string", "null"]},
                        "erased": {"type": ["boolean", "null"]},
                    },
                },
            },
        },
    }

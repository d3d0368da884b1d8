#!/usr/bin/env python3
"""Print a new KRaft cluster id, the shape Kafka's ``Uuid.randomUuid().toString()`` gives: 22
url-safe base64 characters, never starting with '-'.

``deploy/kafka.sh`` (``cluster_id``) runs it with the system ``python3`` before the project's
venv exists, so it uses the standard library only: ``python3 deploy/tools/kafka_cluster_id.py``.
"""

from __future__ import annotations

import base64
import uuid


def cluster_id() -> str:
    """A random cluster id that does not start with '-' (which a command line would misread)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def main() -> int:
    print(cluster_id())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The viewer's libraries are an extra: the CLI loads them only when ``serve`` runs."""

from __future__ import annotations

import json
import textwrap

from tests.support.python import run_python


def test_the_cli_loads_no_web_library_until_serve_runs() -> None:
    code = textwrap.dedent(
        """
        import json, sys
        import baldur_audit.consumers.cli
        web = ("starlette", "uvicorn", "jinja2")
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in web)))
        """
    )
    assert json.loads(run_python(code)) == []

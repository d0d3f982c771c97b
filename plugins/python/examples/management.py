"""The management example: one ``management.handle`` call that touches four host families.

The host side invokes it through hostd (``hostd.invoke``, which adds ``host_callback_id``)::

    hostd invoke --plugin demo-management-python management.handle \
        '{"url": "http://127.0.0.1:8080/hello", "model": "gpt-4o-mini"}'

and the plugin calls, forwarding the ``host_callback_id`` it was given: ``host.log``,
``host.auth.list``, ``host.http.do`` (GET ``url``) and ``host.model.execute`` (an OpenAI chat
completion for ``model``), then answers with what came back. Run it next to a
``hostd serve --listen unix:PATH`` with ``HOSTD_SOCKET=unix:PATH``, or under
``hostd run -- python management.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

try:
    from hostd_plugin import Plugin
except ImportError:  # run from a checkout, without `pip install ./plugins/python`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hostd_plugin import Plugin

PLUGIN_ID = "demo-management-python"
plugin = Plugin(PLUGIN_ID)


@plugin.method("management.handle")
async def handle(params: dict[str, Any]) -> dict[str, Any]:
    url = str(params["url"])
    model = str(params["model"])
    scope = str(params.get("host_callback_id", ""))

    await plugin.log("management.handle", level="info", fields={"url": url}, host_callback_id=scope)
    auth_files = await plugin.auth_list()
    page = await plugin.http_do(url, method="GET", host_callback_id=scope)
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hello"}]}).encode()
    answer = await plugin.model_execute("openai", model, body, host_callback_id=scope)
    return {
        "plugin": PLUGIN_ID,
        "auth_files": len(auth_files),
        "http_status": page.status_code,
        "http_body": page.text(),
        "model_status": answer.status_code,
        "model_body": answer.text(),
    }


if __name__ == "__main__":
    plugin.run()

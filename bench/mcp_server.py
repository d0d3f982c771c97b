"""The peer: a trivial MCP server (the MCP Python SDK) on stdio, for the peer comparison.

It serves ``ping`` (built in) and one ``echo`` tool. Run as ``python -m bench.mcp_server``.
"""

from __future__ import annotations

from mcp.server import MCPServer

server: MCPServer = MCPServer("bench-peer")


@server.tool()
def echo(text: str) -> str:
    """Return ``text`` unchanged."""
    return text


def main() -> None:
    server.run("stdio")


if __name__ == "__main__":
    main()

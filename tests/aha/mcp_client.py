"""Drives `aha mcp` with the official MCP Python SDK (the `mcp` package), as Codex, Claude Code
or goose would: start it over stdio, initialize, list the tools, make the calls given, close.

Usage: mcp_client.py AHA_BIN WORKSPACE CALLS_JSON
CALLS_JSON is a list of {"tool": NAME, "arguments": {...}}. Prints one JSON object: the server's
name and instructions, the tools with their annotations, and each call's result (is_error, the
text content, the structured content). tests/aha/mcp_server.rs checks them.
"""

import json
import sys

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client


async def main(aha: str, workspace: str, calls: list) -> dict:
    # Started from another folder on purpose: the workspace comes from -C.
    params = StdioServerParameters(command=aha, args=["mcp", "-C", workspace], cwd="/")
    with anyio.fail_after(120):
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=60) as session:
                init = await session.initialize()
                listed = await session.list_tools()
                tools = []
                for t in listed.tools:
                    a = t.annotations
                    tools.append(
                        {
                            "name": t.name,
                            "read_only": a.read_only_hint if a else None,
                            "destructive": a.destructive_hint if a else None,
                            "input_schema": t.input_schema,
                            "output_schema": t.output_schema,
                        }
                    )
                results = []
                for c in calls:
                    r = await session.call_tool(c["tool"], c.get("arguments", {}))
                    results.append(
                        {
                            "is_error": bool(r.is_error),
                            "text": "".join(getattr(b, "text", "") for b in r.content),
                            "structured": r.structured_content,
                        }
                    )
    return {
        "server": {
            "name": init.server_info.name,
            "protocol_version": init.protocol_version,
            "instructions": init.instructions,
        },
        "tools": tools,
        "results": results,
    }


if __name__ == "__main__":
    out = anyio.run(main, sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))
    print(json.dumps(out, ensure_ascii=False))

"""A small MCP server over streamable HTTP, written with the official `mcp` package, for aha's
MCP client tests (tests/aha/mcp_client.rs). Its tools misbehave on purpose:

- `shout` (read-only): answers with its text in capitals;
- `crash`: the whole server process exits in the middle of the call;
- `hang`: never answers;
- `odd`: has an input schema llguidance cannot compile (a `type` that does not exist and a
  `pattern` that is not a regular expression).

Usage: python mcp_http_server.py PORT_FILE: it listens on a free port of 127.0.0.1 and writes
the port to PORT_FILE once it is listening. With `--stdio` instead, it speaks MCP on stdin and
stdout (the same tools, so that a crash over stdio can be tested too).
"""

import asyncio
import os
import socket
import sys

import mcp_types as types
import uvicorn
from mcp.server.lowlevel import Server

TOOLS = [
    types.Tool(
        name="shout",
        description="Says the text back in capital letters.",
        input_schema={
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
        annotations=types.ToolAnnotations(read_only_hint=True),
    ),
    types.Tool(
        name="crash",
        description="Stops the server in the middle of the call.",
        input_schema={"type": "object", "properties": {}},
    ),
    types.Tool(
        name="hang",
        description="Never answers.",
        input_schema={"type": "object", "properties": {}},
    ),
    types.Tool(
        name="odd",
        description="A tool whose schema the constrained decoder cannot compile.",
        input_schema={
            "type": "object",
            "properties": {
                "when": {"type": "moment"},
                "code": {"type": "string", "pattern": "(["},
            },
            "required": ["when"],
        },
    ),
]


async def list_tools(ctx, params):
    return types.ListToolsResult(tools=TOOLS)


async def call_tool(ctx, params):
    args = params.arguments or {}
    if params.name == "shout":
        return types.CallToolResult(
            content=[types.TextContent(text=str(args.get("text", "")).upper())]
        )
    if params.name == "crash":
        sys.stderr.write("crashing on purpose\n")
        sys.stderr.flush()
        os._exit(3)
    if params.name == "hang":
        await asyncio.sleep(3600)
    if params.name == "odd":
        return types.CallToolResult(content=[types.TextContent(text=f"odd got {args}")])
    return types.CallToolResult(
        content=[types.TextContent(text=f"no tool {params.name}")], is_error=True
    )


def main():
    server = Server("aha-test", on_list_tools=list_tools, on_call_tool=call_tool)
    if sys.argv[1] == "--stdio":
        from mcp.server.stdio import stdio_server

        async def serve_stdio():
            async with stdio_server() as (r, w):
                await server.run(r, w, server.create_initialization_options())

        asyncio.run(serve_stdio())
        return
    port_file = sys.argv[1]
    app = server.streamable_http_app()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning")
    uv = uvicorn.Server(config)

    async def serve():
        task = asyncio.create_task(uv.serve(sockets=[sock]))
        while not uv.started:
            await asyncio.sleep(0.02)
        with open(port_file + ".tmp", "w") as f:
            f.write(str(port))
        os.replace(port_file + ".tmp", port_file)
        await task

    asyncio.run(serve())


if __name__ == "__main__":
    main()

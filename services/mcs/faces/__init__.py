"""The protocols agents already speak, on top of the REST API: MCP (`mcp_server`: the tools; `mcp_http`: the
same server at /mcp on the api; `mcp_agent`: a stdio MCP server's tools as a mesh agent)."""

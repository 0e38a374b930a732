"""One module per route family; each takes (gateway, request, ctx, **path params)."""

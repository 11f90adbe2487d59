"""Redis storage: key names, one Lua script per atomic move, and the connection layer."""

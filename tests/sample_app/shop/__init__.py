"""A sample application that uses Hopper's tasks (kept as a test of the client)."""

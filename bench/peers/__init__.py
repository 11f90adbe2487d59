"""One module per peer: its app object, its no-op job and its producer, loaded by its own CLI."""

"""Redis connections: URL forms, TLS, Sentinel, the embedded server, command packing, pub/sub."""

"""Sans-IO Kafka protocol: bytes in, messages out, and back. Never touches sockets or files."""

"""Vector stores: the protocol, implementations, ingestion and a factory."""

"""Text embedders: the protocol, implementations and a factory."""

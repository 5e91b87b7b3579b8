"""supportbot: the composition root (config, CLI, `run`) that wires core, mail and Discord together."""

__version__ = "0.1.0"

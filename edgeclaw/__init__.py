"""EdgeClaw: the OpenClaw node for Raspberry Pi and other small ARM boards."""

__version__ = "0.1.0"

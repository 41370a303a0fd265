"""The I/O side: one WebSocket session, the reconnecting runner around it, and invoke dispatch."""

"""Sans-I/O OpenClaw gateway protocol: frames, identity and handshake. No sockets, no clocks."""

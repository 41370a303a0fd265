"""How the node lives on a board: state files, logging, telemetry bus, systemd."""

"""Policy layer: decides *when* (state machine, heartbeats, witness, promotion), plus the CLI and the lab."""

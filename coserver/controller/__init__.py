"""The per-host controller (what systemd runs): decides *when* (policy, state machine, heartbeats, witness) and acts."""

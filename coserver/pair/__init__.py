"""The operator's client of a pair: status, failover, switchover, re-protection, maintenance."""

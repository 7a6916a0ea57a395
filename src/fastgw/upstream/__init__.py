"""The upstream side: connections, per-target keep-alive pools, target groups and balancing."""

"""The one-machine lab: a COLO pair in network namespaces, its faults and its fault trials."""

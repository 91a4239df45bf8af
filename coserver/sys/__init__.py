"""Operating-system plumbing below everything else: processes, namespaces, subprocesses, bounded async waits."""

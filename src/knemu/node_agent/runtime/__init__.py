"""The pod runtime: sandboxes (pause processes, namespaces), containers, probes, stdin and
the built-in workloads."""

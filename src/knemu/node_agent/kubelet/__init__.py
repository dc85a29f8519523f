"""The kubelet: pod sync with the api-server, the HTTP API (exec, attach, port-forward, logs,
trace, flows, chaos, packet capture, lifecycle) and metrics."""

"""The gRPC service ``knemu.v1.Cluster`` (watch streams, node registration, leases, pod
status) and the conversion of stored objects to its typed protobuf views."""

"""The CNI side: the conflist the agent implements, IPAM, hostPorts (portmap) and resolv.conf."""

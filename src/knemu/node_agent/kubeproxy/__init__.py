"""kube-proxy's tables and proxies: the service table, conntrack, the NodePort proxy and the
node-local DNS forwarder."""

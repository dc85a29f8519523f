"""knemu's ingress controller: Ingress objects served by an HTTP/1.1 reverse proxy, run as pods
behind a LoadBalancer Service as ingress-nginx is (``python -m knemu.ingress``).

``routing`` is the sans-I/O core (host and path rules, backends to endpoints, TLS Secret by
SNI, forwarded headers); ``apiclient`` talks to the api-server with in-cluster configuration;
``proxy`` is the aiohttp reverse proxy; ``controller`` ties them into one process.
"""

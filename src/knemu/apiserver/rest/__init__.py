"""REST (aiohttp) on Kubernetes paths: handlers, request paths and resources, bodies, patches,
selectors, Status answers, ``?watch=true`` streams and the proxies to node agents."""

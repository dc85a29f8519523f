"""Who is asking and may they: the authenticator chain, request attributes and the RBAC
authorizer, all sans-I/O (the aiohttp adapter is ``rest/access.py``)."""

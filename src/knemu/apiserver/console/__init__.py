"""The web console the api-server serves at ``/console/``: a live cluster map, services,
flows, traces, chaos and seed tours (``routes`` for the HTTP surface, ``feed`` for the live
stream, ``actions`` for trace and chaos, ``model`` for what the page draws, ``static/`` for
the page itself)."""

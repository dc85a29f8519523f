"""Streaming protocols the api-server speaks to kubectl besides websockets: SPDY/3.1, as an
HTTP upgrade or tunnelled in a websocket, for port-forward, exec and attach."""

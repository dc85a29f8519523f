"""knemu apiserver.

``server`` wires the parts; sub-packages by role, top to bottom: ``rest`` | ``grpc_api``
(serving), ``controllers``, ``nodes`` | ``admission`` (node registry, request pipeline),
``ipam`` | ``recorder``, ``validation``, ``meta`` | ``storage``.
"""

"""The data plane: the router core (routes, service NAT, encapsulation), its flow log,
faults, trace probe, TUN devices and the asyncio adapters that own the file descriptors."""

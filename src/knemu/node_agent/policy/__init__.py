"""NetworkPolicy: the rules, the per-node engine, the router's gate and its watch wiring."""

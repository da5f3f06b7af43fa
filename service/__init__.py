"""feedjobs: the gateway and the core shared by gateway and consumer."""

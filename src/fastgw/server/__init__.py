"""The client side of the gateway: protocol, exchanges, listeners, process model."""

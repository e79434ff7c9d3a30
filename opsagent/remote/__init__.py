"""Reaching a server: the SSH transport, the local sandbox host, doctor, fleet runs and the seed's one-liners."""

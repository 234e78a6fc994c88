"""Local mode: the whole platform as supervised processes on loopback (`core2 up`)."""

"""Size-aware, verifiable image transfers for OpenStack Glance."""

"""Benchmarks of the bridge's read and search paths (``make bench`` runs ``bench.run``)."""

"""The live dashboard (``python -m dashboard``): reads Prometheus and the lake, never writes."""

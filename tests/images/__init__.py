"""Container images for real lab nodes, built locally (see README.md)."""

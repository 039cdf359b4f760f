"""Placement of pool replicas on GPU node pools, and scaling with load."""

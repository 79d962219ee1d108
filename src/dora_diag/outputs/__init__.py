"""Outputs: CSV, JSON and files written atomically."""

"""Serving: exact history caches, exported artifacts, batch scoring."""

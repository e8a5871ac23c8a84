"""Recipes: training and evaluation that read top to bottom."""

"""Recipes, plans and the streaming executor (no tensor math here: that is :mod:`graftkit.methods`)."""

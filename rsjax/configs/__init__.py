"""Configs are code: `get_config(preset)` files returning a locked `ml_collections.ConfigDict`."""

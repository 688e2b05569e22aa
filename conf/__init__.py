"""Hydra configs, shipped inside the package so the console script and wheel installs find them."""

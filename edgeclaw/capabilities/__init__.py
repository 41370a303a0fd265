"""Capabilities: one package per family of node commands, each with a simulated backend."""

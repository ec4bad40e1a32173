"""Peer servers that serve_load runs against torchport, each in its own venv (launched by file path)."""

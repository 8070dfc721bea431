"""Example source models built from data that ships inside packages (no downloads)."""

"""Sans-IO core."""

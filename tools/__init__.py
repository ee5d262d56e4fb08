"""Commands that are not pipeline stages."""

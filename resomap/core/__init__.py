"""Shared by every stage: params, the grid's cells and output paths, atomic io, device, errors."""

"""The prepare stage: data sources, decoding, resizing on every core, splits, the prepared arrays."""

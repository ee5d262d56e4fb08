"""Data sources, the one resize policy, prepared arrays and device-side augmentation."""

"""Prepared arrays as every stage after prepare reads them: loading, device placement, augmentation."""

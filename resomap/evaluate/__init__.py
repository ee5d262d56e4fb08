"""The evaluate stage: predictions on the test split and classification metrics."""

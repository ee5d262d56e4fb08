"""Thin stage scripts: dvc.yaml runs each as `python -m stages.NAME`."""

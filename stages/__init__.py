"""Thin stage scripts: dvc.yaml runs each as `python -m stages.NAME`."""

import sys

from resomap.core.stage import exit_quietly_on_ctrl_c

# run as `python -m stages.NAME`: Python sets argv[0] to "-m" while it locates the module, so this
# package is imported before the stage's own (heavy) imports, never when a test imports a stage
if sys.argv[0] == "-m":
    exit_quietly_on_ctrl_c()

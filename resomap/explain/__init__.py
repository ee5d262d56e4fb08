"""The explain stage: heatmap methods, their scores, and PNG panels."""

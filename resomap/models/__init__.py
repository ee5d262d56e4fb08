"""The model registry (names, minimum resolutions, Grad-CAM layers), small architectures, inference."""

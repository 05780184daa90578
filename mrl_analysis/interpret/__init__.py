"""Theme: where small and large sizes disagree, and Grad-CAM at every size."""

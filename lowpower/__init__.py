"""lowpower: workstation and cluster toolkit for LPCVC-style low-power semantic segmentation."""

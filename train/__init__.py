"""Report-supervised 3D segmentation training (PyTorch + MONAI)."""

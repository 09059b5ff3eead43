"""A UNet denoiser for modiff with denoising and segmentation heads."""

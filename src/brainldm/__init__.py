"""brainldm: fMRI -> latent diffusion reconstructions and encoding maps."""

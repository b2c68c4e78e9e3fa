"""Networks: the diffusion prior (UNet), DBLM (restorer + transfer model + std estimator) and DGSA."""

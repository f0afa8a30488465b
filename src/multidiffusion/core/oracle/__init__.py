"""The exact reference model: a Gaussian field whose denoiser and conditionals are known in closed form."""

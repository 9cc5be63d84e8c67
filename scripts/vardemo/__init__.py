"""Python side of scalekv's demo model: a small VAR (next-scale prediction) model on Fashion-MNIST.

Modules: `st` (safetensors read/write without the `safetensors` package), `fmnist` (data),
`models` (VQ-VAE and VAR transformer with the official FoundationVision/VAR state-dict layout),
`classifier` (the small CNN used for evaluation).
"""

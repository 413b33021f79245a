"""Sampling conformers from a trained model: prompts, constrained decoding, sample files, `molgen3d generate`."""

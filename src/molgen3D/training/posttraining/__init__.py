"""GRPO post-training: rollouts from the constrained sampler, rewards against training-split conformers."""

"""Meta-training: the loop, curriculum, schedule and checkpoints."""

"""The run stage: sequence a training, resume it, write its run directory and checkpoints, evaluate it."""

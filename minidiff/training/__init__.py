"""Training plumbing around the course's loss: the torch-free config (`config`), the Trainer and its
loop (`trainer`), batches, checkpoints, run folders, progress and process groups."""

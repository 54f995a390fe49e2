"""Training: the pure steps, and the loop that ties data, model and I/O."""

"""Tasks (generators, verifiers, step checks), answer checking, loaders, TFDS and grain."""

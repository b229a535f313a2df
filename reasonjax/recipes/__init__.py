"""Paper pipelines: plain Python chaining jit-compiled training and search rounds."""

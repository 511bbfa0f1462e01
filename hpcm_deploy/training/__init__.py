"""Training a small model on the CPU from images that ship with registry packages."""

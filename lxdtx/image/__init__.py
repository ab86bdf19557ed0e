"""Image building and handling: tools that produce and read LXD image tarballs."""

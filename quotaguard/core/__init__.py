"""The pure, I/O-free core: policy model, algorithms, decisions and errors."""

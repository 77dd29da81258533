"""The clinic's own records (massage sessions): their shape, and validation at the boundary."""

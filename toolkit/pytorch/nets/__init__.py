"""Plain nn.Modules. The contract wrappers (uint8 in, post-processing, flip averaging) are layers.py."""

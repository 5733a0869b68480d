"""Plain nn.Modules. The contract wrappers (uint8 in, post-processing) live in toolkit.pytorch.export."""

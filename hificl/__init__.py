"""hificl: learnable virtual key-value pairs inside every attention head of a frozen multimodal LMM."""

__version__ = "0.1.0"

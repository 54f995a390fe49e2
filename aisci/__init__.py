"""aisci: a JAX/Flax research codebase for AI in science and industry."""

__version__ = '0.1.0'

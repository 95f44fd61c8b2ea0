"""longrope-convert: bake searched LongRoPE factors into shippable artifacts and prove parity."""

__version__ = "0.1.0"

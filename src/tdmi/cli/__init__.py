"""Thin typer front-ends over the library; each console script lives in its own module."""

"""Scripts the stack runs by path with another venv's interpreter."""

"""Paste filters; each module holds one filter and stays thin."""

"""Generators, discriminators and losses of the papers in ../shared/papers, behind one method registry."""

"""Helpers the tests share (hand-built races, tower consistency checks); never imported by the
deployable packages."""

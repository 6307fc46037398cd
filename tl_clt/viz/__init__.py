"""Visualisation and export of attribution graphs (`neuronpedia`: the Neuronpedia /
circuit-tracer graph JSON)."""

"""The array-based neuron and its graph operations."""

from .neuron import Neuron, ParseProblem

__all__ = ["Neuron", "ParseProblem"]

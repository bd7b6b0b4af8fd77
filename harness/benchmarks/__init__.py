"""Stand-alone micro-benchmarks whose printed output is committed under docs/results/."""

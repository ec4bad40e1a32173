"""torchport.benchmarks: the library behind `torchport bench` and runnable benchmarks (python -m torchport.benchmarks.NAME)."""

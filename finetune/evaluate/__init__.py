"""Did fine-tuning make the completions better? Held-out FIM benchmarks, metrics, execution-based benchmarks."""

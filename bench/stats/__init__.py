"""Statistics of a benchmark run: seed-set summaries, the paired cluster bootstrap, the ranking."""
from bench.stats.seedsets import QUALITY_METRICS, THROUGHPUT_METRICS, mean_ci, pareto_front, rank_methods, summarize

"""Statistics of a benchmark run: seed-set summaries (seedsets), the paired cluster bootstrap over
prompts (bootstrap), reading scale curves at a matched alignment level (matched)."""

from bench.stats.seedsets import THROUGHPUT_METRICS, mean_ci, pareto_front, quality_metrics, rank_methods, summarize

__all__ = ["THROUGHPUT_METRICS", "quality_metrics", "mean_ci", "pareto_front", "rank_methods", "summarize"]

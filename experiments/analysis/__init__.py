"""Reading finished runs: statistics, comparison reports, plots, sweep summaries."""

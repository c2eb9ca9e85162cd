"""Analysis of logged runs (probe Parquet parts, summaries) into the paper's figures and tables.

Reads run directories only — plots are always regenerated from files, never from memory.
"""

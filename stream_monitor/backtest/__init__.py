"""Replay as a backtest: progress while files are read, the statistic trace, the HTML report."""

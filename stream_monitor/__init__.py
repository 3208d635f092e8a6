"""stream-monitor: streaming drift detection for ML systems on Kafka."""

__version__ = "0.1.0"

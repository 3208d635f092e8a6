"""Detector and join state per input partition: records, the changelog, recovery on assignment."""

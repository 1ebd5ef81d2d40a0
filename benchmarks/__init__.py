"""Benchmarks of summarizer, run from the repository (not installed with the package).

- ``python -m benchmarks.bench``: the refresh and read benchmark on one scratch database (``measure.py``);
- ``python -m benchmarks.loadtest``: the three dashboard questions from many clients, idle and during refreshes;
- ``python -m benchmarks.pagebench``: each dashboard page's time to its first chart, in headless Chromium;
- ``servers.py``: what the benchmark asks of each database server (settings, truncate, settle).
"""

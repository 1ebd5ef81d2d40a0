"""Benchmarks of summarizer, run from the repository (not installed with the package).

- ``python -m benchmarks.bench``: the refresh and read benchmark on one scratch database (``measure.py``);
- ``python -m benchmarks.loadtest``: the read API under load, against a running ``summarizer serve``;
- ``python -m benchmarks.pagebench``: each dashboard page's time to its first chart, in headless Chromium;
- ``servers.py``: what the benchmark asks of each database server (settings, truncate, settle).
"""

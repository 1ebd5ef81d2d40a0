"""Following the database's change stream: exact deltas to the tiers within seconds of each commit.

A change stream (``stream.py``: the contract; one module per database) yields committed source-table
transactions in commit order, each with the stream position it reaches. The follower turns their row
changes into signed deltas of ``value`` and ``row_count`` on the tier groups and applies them in
batches, each batch in one transaction together with the position it reached.
"""

"""The web pages of ``summarizer serve``: the dashboards at ``/`` and the read endpoints only they need.

* :mod:`.ops` — ``/api/runs`` and ``/api/unassigned``: the run history and the unassigned share per
  tier, for the operations page (checked parameters, pure statements, run by the reader);
* :mod:`.pages` — mounts those routes, the static page files and ``/`` on the FastAPI app;
* ``static/pages/`` — the pages themselves: plain ES modules and inline SVG charts, no build step and
  nothing fetched from another host.
"""

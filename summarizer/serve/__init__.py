"""What ``summarizer serve`` runs, in its own process: the read functions, the cache and the HTTP app.

Everything here is the optional ``api`` (and ``redis``) extras' side of summarizer; the refresh side
never imports it.

* :mod:`.read` — the read API's queries: parameters checked, statements built, run over the summaries;
* :mod:`.answers` — how an answer is shaped once read: names beside ids, a total order, one page;
* :mod:`.cache` — the response cache, in-process or Redis;
* :mod:`.http` — the FastAPI app: routes, response shapes and error handlers;
* :mod:`.apidocs` — ``/docs``, Swagger UI from ``static/swagger-ui/``;
* :mod:`.httpmetrics` — ``GET /metrics``, the server's own Prometheus metrics;
* :mod:`.ops` — ``/api/runs`` and ``/api/unassigned``, for the operations page;
* :mod:`.pages` — mounts those routes, the static page files and ``/`` on the FastAPI app;
* ``static/pages/`` — the pages themselves: plain ES modules and inline SVG charts, no build step and
  nothing fetched from another host.
"""

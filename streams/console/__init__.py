"""The operator console: a web page, and its JSON API, served by every worker's web server at ``/console/``.

- ``auth``: the token (``TALKSTREAM_CONSOLE_TOKEN``), checked in constant time, and the
  security headers of every answer;
- ``data``: the answers: the same reads and actions as the CLI's (``streams.operations``),
  the charts' series (``streams.flowstats``), and a link's two records as the systems hold them now;
- ``views``: the Faust web views, thin: pages (Jinja2 templates) and the API.

The pages carry no data: their JavaScript (``static/console.js``) asks the API with
the token the browser keeps, so any worker shows the whole system's view.
"""

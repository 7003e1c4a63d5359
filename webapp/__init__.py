"""The people's app on the web: FastAPI routes, Jinja2 templates (autoescaped) and static files
served from this package (HTMX 2.0.11 vendored from the npm package htmx.org as
``static/htmx.min.js``, its license beside it; nothing from a CDN). ``components/app`` holds the
how; this package only speaks HTTP. Started by ``alignpipe app`` (``flows/app_commands.py``)."""

"""The people's app on the web: FastAPI routes, Jinja2 templates (autoescaped) and static files
served from this package (HTMX vendored; nothing from a CDN). ``components/app`` holds the how;
this package only speaks HTTP. Started by ``alignpipe app`` (``flows/app_commands.py``)."""

HTMX_VERSION = "2.0.11"   # static/htmx.min.js, from the npm package htmx.org (license: static/htmx-LICENSE.txt)

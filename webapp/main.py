"""``create_app``: the routes, behind Trusted Host, signed sessions (SameSite=Strict, HttpOnly),
CSRF on every state-changing request and strict response headers."""

from __future__ import annotations

from importlib.resources import files

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import HTMLResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from markupsafe import escape
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from components.app.accounts import read_users_file, sync_file_accounts
from components.app.answering import Answerer
from components.app.database import sessions
from components.app.generation import GenerationQueue
from webapp import aligned, auth, chat, feedback, review
from webapp.pages import ConsentRequired, SignInRequired, go, is_htmx, render
from webapp.security import SecurityHeaders, csrf_protect, session_secret
from webapp.state import AppConfig, AppState

SESSION_HOURS = 8


def create_app(config: AppConfig) -> FastAPI:
    """The app over ``config``'s project; the users file's accounts are brought in first."""
    database = sessions(config.database)
    with database.begin() as db:
        sync_file_accounts(db, read_users_file(config.params.app.users, config.policies))
    app = FastAPI(title="alignpipe app", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(csrf_protect)])
    reading = sessions(config.database, read_only=True)
    app.state.alignpipe = AppState(config, database, reading,
                                   GenerationQueue(Answerer(config.params, config.policies, database)))
    for module in (auth, chat, feedback, aligned, review):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=str(files("webapp") / "static")), name="static")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.exception_handler(SignInRequired)
    def _sign_in(request: Request, _err):
        return go(request, "/login")

    @app.exception_handler(ConsentRequired)
    def _consent(request: Request, _err):
        return go(request, "/consent")

    @app.exception_handler(HTTPException)
    def _problem(request: Request, err: HTTPException):
        if is_htmx(request):   # shown in the page's problem box (see static/app.js for the swap rules)
            return HTMLResponse(f'<p class="problem" role="alert">{escape(str(err.detail))}</p>', err.status_code,
                                headers={"HX-Retarget": "#problem", "HX-Reswap": "innerHTML"})
        return render(request, "problem.html", err.status_code, detail=str(err.detail))

    # outermost first: headers on everything, unknown hosts refused before anything else runs
    app.add_middleware(SessionMiddleware, secret_key=session_secret(config.secret_file), session_cookie="alignpipe_session",
                       max_age=SESSION_HOURS * 3600, same_site="strict", https_only=False)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(config.allowed_hosts))
    app.add_middleware(SecurityHeaders)
    return app

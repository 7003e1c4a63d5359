"""People in the loop, end to end, as a newcomer meets it: `alignpipe run`, then `alignpipe app`
in a real headless Chromium (Debian's, driven by Playwright as tools/screenshots.py drives it):
sign in as a bundled demo user, chat, flag an answer with a reason, find it under My feedback,
a reviewer accepts it, `alignpipe run` takes it into the next data version (the data card
counts it), a withdrawal takes it out of the one after. A second person cannot see or change
the first one's rows; a POST without the CSRF token is refused. Against SQLite in the state
folder, and (marker ``services``) against PostgreSQL while `alignpipe services up` runs.
The SQLite run photographs each page: into a temporary folder, or, with
``ALIGNPIPE_SCREENSHOTS=docs/images``, over the README's screenshots (a test run never changes
the working tree unasked)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from app_support import policies_with_second_user
from conftest import REPO_ROOT
from e2e_project import BIN, SMALLEST, make_project, merge

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
MODEL = "app-e2e-policy"
# the smallest configuration, with a smaller tiny reference still: the model's words do not matter here
SETTINGS = merge(SMALLEST, {"data": {"source": ["data/planted.jsonl", "app:"]},
                            "reference": {"vocab_size": 400, "tiny": {"n_layer": 1, "n_embd": 32, "n_head": 2},
                                          "sft": {"steps": 12, "batch_size": 8}},
                            "registry": {"experiment": "app-e2e", "model_name": MODEL}})
USER, USER_PASSWORD = "tutor-user-1", "demo-tutor-user-1"          # the bundled demo accounts (README)
REVIEWER, REVIEWER_PASSWORD = "kids-tutor-reviewer", "demo-kids-tutor-reviewer"
SECOND, SECOND_PASSWORD = "second-user", "a second person's password"
QUESTION = "Tell me about owls."


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Project:
    root: Path
    env: dict[str, str]
    backend: str

    def alignpipe(self, *args: str, stdin: str | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
        done = subprocess.run([str(BIN / "alignpipe"), *args], cwd=self.root, env=self.env, input=stdin,
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"alignpipe {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    def manifest(self) -> dict:
        return json.loads((self.root / "artifacts" / "dataset" / "manifest.json").read_text())

    def card(self) -> str:
        return (self.root / "artifacts" / "dataset" / "data_card.md").read_text()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def project(request, tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp(f"app-{request.param}"), SETTINGS)
    (root / "data" / "app").mkdir()
    shutil.copy(REPO_ROOT / "data" / "app" / "users.yaml", root / "data" / "app" / "users.yaml")
    policies_with_second_user(root)   # the bundled shape, and a second user; one regex rule keeps ingest quick
    env = dict(os.environ)
    if request.param == "sqlite":
        yield Project(root, env, "sqlite")
        return
    # PostgreSQL runs as the `postgres` user under root: its folder must not sit under a private (0700) one
    home = Path(tempfile.mkdtemp(prefix="alignpipe-app-services-"))
    home.chmod(0o755)
    env = {k: v for k, v in env.items() if not k.startswith(("MLFLOW_", "PREFECT_", "ALIGNPIPE_HOME"))}
    env["ALIGNPIPE_HOME"] = str(home / "state")
    services = Project(root, env, "postgres")
    ports = [str(x) for name in ("--postgres-port", "--mlflow-port", "--prefect-port") for x in (name, free_port())]
    up = services.alignpipe("services", "up", "--root", str(root), *ports)
    exports = dict(line.strip().removeprefix("export ").split("=", 1) for line in up.stdout.splitlines()
                   if line.strip().startswith("export "))
    services.env = env | exports | {"PREFECT_HOME": str(home / "state" / "prefect")}
    try:
        yield services
    finally:
        subprocess.run([str(BIN / "alignpipe"), "services", "down", "--purge"], cwd=root, env=env, timeout=180)
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def running_app(project: Project):
    """``alignpipe app`` on a free port, its output kept; stopped at the end."""
    port = free_port()
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen([str(BIN / "alignpipe"), "app", "--port", str(port)], cwd=project.root,
                                  env=project.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                with contextlib.suppress(OSError):
                    if urllib.request.urlopen(url + "/healthz", timeout=2).status == 200:
                        break
                log.seek(0)
                assert server.poll() is None and time.monotonic() < deadline, log.read()[-3000:]
                time.sleep(0.5)
            log.seek(0)
            yield url, log.read()
        finally:
            server.terminate()
            server.wait(timeout=30)


def sign_in(browser, url: str, name: str, password: str, shot: str = ""):
    page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
    page.goto(url + "/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    if shot:
        page.screenshot(path=shot, full_page=True)
    page.click("button[type=submit]")
    page.check("input[name=agree]")
    page.click("main button[type=submit]")
    page.wait_for_url(url + "/chat")
    return page


def csrf_of(page) -> str:
    return page.locator("input[name=csrf_token]").first.get_attribute("value")


def test_people_flag_answers_and_their_flags_become_the_next_data_version(project, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    shots = project.backend == "sqlite"
    images = REPO_ROOT / os.environ["ALIGNPIPE_SCREENSHOTS"] if "ALIGNPIPE_SCREENSHOTS" in os.environ else tmp_path
    image = (lambda name: str(images / name)) if shots else (lambda name: "")
    project.alignpipe("run")
    project.alignpipe("app", "add-user", SECOND, "--role", "user", "--owner", "tutor-user-2", "--password-stdin",
                      stdin=SECOND_PASSWORD + "\n")
    with running_app(project) as (url, started), sync_playwright() as playwright:
        assert ("postgresql" if project.backend == "postgres" else "sqlite:///") in started, started
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        user = sign_in(browser, url, USER, USER_PASSWORD, image("app-login.png"))

        # chat: the answer streams in, then shows the version that wrote it and the flag form
        user.fill("#text", QUESTION)
        user.click("#ask button[type=submit]")
        expect(user.locator(".said.model .version").first).to_contain_text(f"written by {MODEL} v1", timeout=120_000)
        message = int(user.locator(".said.model").first.get_attribute("id").removeprefix("answer-"))
        form = user.locator(f"#flag-{message}")
        form.locator("input[value=bad]").check()
        form.locator("select[name=reason]").select_option("offensive")
        form.locator("select[name=rating]").select_option("2")
        form.locator("input[name=comment]").fill("rude about owls")
        form.locator("button[type=submit]").click()
        expect(user.locator(f"#flag-{message} .saved")).to_be_visible()
        if shots:
            user.screenshot(path=image("app-chat.png"), full_page=True)

        user.goto(url + "/feedback")
        expect(user.locator("li.row.active")).to_contain_text(QUESTION)
        expect(user.locator("li.row.active")).to_contain_text("rude about owls")
        row = int(user.locator("li.row.active").first.get_attribute("id").removeprefix("row-"))
        # a POST without the CSRF token (same origin, the person's own cookie) is refused
        forged = user.request.post(f"{url}/feedback/{row}/withdraw", headers={"Origin": url}, max_redirects=0)
        assert forged.status == 403 and "CSRF token missing" in forged.text()

        # a second person can neither see nor change the first one's rows
        second = sign_in(browser, url, SECOND, SECOND_PASSWORD)
        assert second.request.get(f"{url}/messages/{message}").status == 404
        taken = second.request.post(f"{url}/feedback/{row}/withdraw", max_redirects=0,
                                    headers={"Origin": url, "X-CSRF-Token": csrf_of(second)})
        assert taken.status == 404
        edited = second.request.post(f"{url}/messages/{message}/feedback", max_redirects=0,
                                     headers={"Origin": url, "X-CSRF-Token": csrf_of(second)},
                                     form={"verdict": "good", "reason": "kind"})
        assert edited.status == 404
        second.goto(url + "/feedback")
        expect(second.locator("main")).not_to_contain_text(QUESTION)

        # the deployer's reviewer accepts the user's flag into kids-tutor's data
        reviewer = sign_in(browser, url, REVIEWER, REVIEWER_PASSWORD)
        reviewer.goto(url + "/review")
        expect(reviewer.locator(f"#review-{row}")).to_contain_text(QUESTION)
        expect(reviewer.locator("table.review")).not_to_contain_text(USER)   # people appear by pseudonym
        reviewer.locator(f"#review-{row} button[value=accepted]").click()
        expect(reviewer.locator(f"#review-{row}")).to_contain_text("accepted")
        if shots:
            reviewer.screenshot(path=image("app-review.png"), full_page=True)

        # the retrain flow takes it in: the new data version counts it (the user's row and the deployer's copy)
        before = project.manifest()["version"]
        project.alignpipe("run")
        flagged = project.manifest()
        assert flagged["version"] != before and flagged["app"]["rows"] == 2 and flagged["app"]["persons"] == 1
        assert "App feedback (people in the loop): 2 judgements from 1 person" in project.card()
        user.goto(url + "/aligned")
        expect(user.locator(".newest")).to_contain_text("2 judgements from 1 person")
        expect(user.locator("main")).to_contain_text(f"data version {flagged['version']}")
        expect(user.locator(".model-card").first).to_contain_text(f"{MODEL} v1")
        if shots:
            user.locator(".newest details").evaluate("details => details.open = true")
            user.screenshot(path=image("app-aligned.png"), full_page=True)

        # withdrawn: gone from the next data version; the page says which versions had used it
        user.goto(url + "/feedback")
        if shots:
            user.screenshot(path=image("app-feedback.png"), full_page=True)
        user.locator(f"#row-{row} button.danger").click()
        expect(user.locator(f"#row-{row}")).to_contain_text("withdrawn")
        expect(user.locator(f"#row-{row} .used")).to_contain_text(f"Already used by: data version {flagged['version']}")
        if shots:
            user.screenshot(path=image("app-withdrawn.png"), full_page=True)
        project.alignpipe("run")
        after = project.manifest()
        assert after["version"] != flagged["version"] and after["app"]["rows"] == 0
        assert "App feedback (people in the loop): none" in project.card()
        browser.close()

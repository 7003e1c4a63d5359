"""Screenshots of the MLflow and Prefect web UIs for the README, taken after a ``make run``.

The README shows what a run leaves behind: the MLflow parent run, one of its plots, its
training-loss curve, the registered model version and the Prefect flow run. This script starts both UIs over the
project's local state (``<project>/.alignpipe``, or ``$ALIGNPIPE_HOME``), finds the newest
``retrain`` run, photographs each page with a headless Chromium, and stops both servers,
even on error. Pages with nothing to show yet are skipped with a message.

Needs the ``screenshots`` extra (Playwright's Python package) and a system Chromium at
/usr/bin/chromium; no browser is downloaded. Not a test, not run in CI::

    .venv/bin/python tools/screenshots.py [--project DIR] [--out docs/images]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

BIN = Path(sys.executable).parent
PLOT = "plots/relearn_loss.png"   # opened in the run's artifacts tab
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Set before each page loads: MLflow's "Model training" sidebar, and its assistant panel closed.
MLFLOW_UI_SETTINGS = """
localStorage.setItem("mlflow.workflowType_v1", '"machine_learning"');
localStorage.setItem("mlflow.assistant.panelOpen_v1", "false");
localStorage.setItem("mlflow.assistant.fab.autoOpenedOnFirstLoad_v1", "true");
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def started(cmd: list[str]):
    """Run ``cmd`` in its own process group, output to a temporary log; stop the group on exit."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc, log
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_until_up(name: str, server: tuple, base_url: str, health_path: str, timeout: float = 120) -> None:
    """Poll ``base_url + health_path`` until it answers 200; exit with the server's log if it dies."""
    proc, log = server
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(base_url + health_path, timeout=2) as response:
                if response.status == 200:
                    print(f"{name} UI up at {base_url}")
                    return
        if proc.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            sys.exit(f"{name} did not come up at {base_url}:\n{log.read()[-3000:]}")
        time.sleep(0.5)


def mlflow_targets(tracking_uri: str, experiment: str, model_name: str) -> dict:
    """The newest model version, the parent ``retrain`` run that registered it (else the newest
    one), that run's loss curve (or None) and its Prefect flow run id (or None)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        sys.exit(f"no MLflow experiment {experiment!r}: run `make run` first")
    runs = [run for run in client.search_runs([exp.experiment_id], "attributes.run_name = 'retrain'",
                                              order_by=["attributes.start_time DESC"], max_results=50)
            if "mlflow.parentRunId" not in run.data.tags]
    if not runs:
        sys.exit(f"no parent run named 'retrain' in experiment {experiment!r}")
    versions = client.search_model_versions(f"name = '{model_name}'", max_results=1,
                                            order_by=["version_number DESC"])
    run = next((r for r in runs if versions and r.info.run_id == versions[0].run_id), runs[0])
    run_id = run.info.run_id

    points = {key: len(client.get_metric_history(run_id, key)) for key in run.data.metrics}
    curves = {key: n for key, n in points.items() if n > 1}
    losses = [key for key in curves if "loss" in key.lower()]
    metric = max(losses or curves, key=curves.get, default=None)
    print(f"run {run_id}: metrics with a history: "
          + (", ".join(f"{key} ({n} points)" for key, n in sorted(curves.items())) or "none")
          + f"; chosen: {metric}; single-valued: "
          + (", ".join(sorted(points.keys() - curves.keys())) or "none"))

    return {"experiment_id": exp.experiment_id, "run_id": run_id, "metric": metric,
            "version": versions[0].version if versions else None,
            "flow_run_id": run.data.tags.get("prefect.flow_run_id")}


def prefect_flow_run(flow_name: str, flow_run_id: str | None):
    """The flow run the MLflow run names, else the newest of ``flow_name`` (on $PREFECT_API_URL), or None."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        if flow_run_id:
            return client.read_flow_run(flow_run_id)
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                                     sort=FlowRunSort.START_TIME_DESC, limit=1)
    return runs[0] if runs else None


def shoot(page, url: str, text: str, path: Path) -> None:
    """Open ``url``, wait until ``text`` is rendered, give the rest a moment, save a PNG."""
    page.goto(url)  # not wait_until="networkidle": the MLflow UI never stops polling
    page.get_by_text(text).first.wait_for(timeout=30_000)
    time.sleep(3)  # the page's remaining requests, and charts animating in
    page.screenshot(path=path, full_page=True)
    print(f"saved {path}")


def take_screenshots(args: argparse.Namespace, mlflow_url: str, prefect_url: str) -> None:
    from playwright.sync_api import sync_playwright

    found = mlflow_targets(mlflow_url, args.experiment, args.model_name)
    exp, run, metric, version = found["experiment_id"], found["run_id"], found["metric"], found["version"]
    flow_run = prefect_flow_run(args.flow, found["flow_run_id"])
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.add_init_script(MLFLOW_UI_SETTINGS)
        page = context.new_page()

        shoot(page, f"{mlflow_url}/#/experiments/{exp}/runs/{run}", run, args.out / "mlflow-run.png")
        shoot(page, f"{mlflow_url}/#/experiments/{exp}/runs/{run}/artifacts/{PLOT}", Path(PLOT).name,
              args.out / "mlflow-plots.png")
        if metric:
            query = "&".join(f"{key}={quote(json.dumps(value))}" for key, value in
                             {"runs": [run], "metric": metric, "experiments": [exp],
                              "plot_metric_keys": [metric]}.items())
            shoot(page, f"{mlflow_url}/#/metric?{query}&x_axis=step", metric, args.out / "mlflow-metric.png")
        else:
            print(f"skipped mlflow-metric.png: run {run} has no metric logged more than once")
        if version:
            shoot(page, f"{mlflow_url}/#/models/{quote(args.model_name)}/versions/{version}",
                  f"Version {version}", args.out / "mlflow-version.png")
        else:
            print(f"skipped mlflow-version.png: no version of {args.model_name!r} is registered")
        if flow_run:
            shoot(page, f"{prefect_url}/runs/flow-run/{flow_run.id}", flow_run.name,
                  args.out / "prefect-flow-run.png")
        else:
            print(f"skipped prefect-flow-run.png: no flow run of {args.flow!r} in $PREFECT_HOME")
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=Path.cwd(), help="project folder (default: cwd)")
    parser.add_argument("--out", type=Path, default=Path("docs/images"), help="where the PNGs go")
    parser.add_argument("--experiment", default="alignpipe")
    parser.add_argument("--model-name", default="alignpipe-policy")
    parser.add_argument("--flow", default="retrain")
    args = parser.parse_args()

    state = Path(os.environ.get("ALIGNPIPE_HOME", args.project / ".alignpipe")).resolve()
    if not (state / "mlflow.db").exists():
        sys.exit(f"no MLflow store at {state / 'mlflow.db'}: run `make run` first")
    args.out.mkdir(parents=True, exist_ok=True)

    mlflow_port, prefect_port = free_port(), free_port()
    mlflow_url, prefect_url = f"http://127.0.0.1:{mlflow_port}", f"http://127.0.0.1:{prefect_port}"
    # For the servers and for this process's Prefect client alike.
    os.environ.update({"MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_HOME": str(state / "prefect"),
                       "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_API_URL": f"{prefect_url}/api",
                       "PREFECT_UI_API_URL": f"{prefect_url}/api"})
    mlflow_cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{state / 'mlflow.db'}",
                  "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"]
    # --no-services: the API and UI only, no scheduler or other loops writing to the state.
    prefect_cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                   "--port", str(prefect_port), "--no-services"]

    with started(mlflow_cmd) as mlflow_server, started(prefect_cmd) as prefect_server:
        wait_until_up("MLflow", mlflow_server, mlflow_url, "/health")
        wait_until_up("Prefect", prefect_server, prefect_url, "/api/health")
        take_screenshots(args, mlflow_url, prefect_url)


if __name__ == "__main__":
    main()

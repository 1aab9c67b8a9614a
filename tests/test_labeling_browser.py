"""The labeling widget in a real browser: JupyterLab on loopback, driven by Playwright in Debian's Chromium.

The test starts JupyterLab (no token, 127.0.0.1, a free port, and the options `make lab` gives it: the course's own
Lab settings) on a temporary folder holding a small notebook that shows the widget, runs the notebook, clicks through
several labels, an undo, a key typed in the widget's keys box and a double click, checks that hostile strings in the
pair were shown as text (no element made from them, no script run), and then checks the label file on disk.
Screenshots go to tests/artifacts/ (git-ignored). A second test runs lesson 02's section 8 as it is (two simulated
annotators through the widget) and checks that its report reaches the page: JupyterLab drops output that comes
faster than 1,000 IOPub messages/s, which nbval never sees. A third runs lessons 05 and 06 whole, as a learner does:
the last cell's output must reach the page with no stderr or error output on the way (a stderr line injected into
lesson 05 failed it), and in lesson 06 the widget must render and save a click.

Chromium comes from apt (``apt-get install -y --no-install-recommends chromium``, which .ci/run does); without it
the test is skipped with that hint, unless the CI environment variable is set, where a missing browser fails.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

import iopub_guard
from helpers import labeling
from lab_settings import make_lab_options

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic",
                 # no host name but loopback resolves: the browser cannot reach the network even by mistake
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1"]
ANNOTATOR = "browser-tester"
ITEMS = 7
RATE_LIMIT = iopub_guard.MSG_RATE_LIMIT / iopub_guard.HEADROOM  # IOPub messages/s: see the lab fixture
HOSTILE_PROMPT = "<script>window.__pwned = 1</script> what is 2 plus 2 ?"
HOSTILE_LEFT = '<img src=x onerror="window.__pwned = 2">'
HOSTILE_RIGHT = "<b>bold</b> <iframe src=x></iframe> $x^2$ &amp; <svg onload=\"window.__pwned = 3\"></svg>"

NOTEBOOK_SOURCE = f"""\
from helpers import labeling, world
normal = [p for p in world.prompts("train") if p.category == "answerable"][:{ITEMS - 1}]
items = [labeling.Item(p.text, world.response(p, "correct"), world.response(p, "insult")) for p in normal]
items.insert(1, labeling.Item({HOSTILE_PROMPT!r}, {HOSTILE_LEFT!r}, {HOSTILE_RIGHT!r}))
session = labeling.LabelingSession(items, "labels", {ANNOTATOR!r}, seed=0)
view = labeling.LabelingWidget(session)
view
"""


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _browser_missing() -> str | None:
    if not CHROMIUM.exists():
        return (f"Chromium is not installed at {CHROMIUM}: install it with `apt-get update && apt-get install -y "
                f"--no-install-recommends chromium` (as .ci/run does) to run the browser test")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is missing: run `make setup`"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on loopback serving a temporary folder with the widget notebook: yields (url, root)."""
    missing = _browser_missing()
    try:
        course_options = make_lab_options()  # the course's Lab settings, as `make lab` passes them
    except FileNotFoundError as e:
        missing = missing or str(e)
    if missing:
        (pytest.fail if _ci() else pytest.skip)(missing)
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "root"
    root.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.cells = [nbformat.v4.new_code_cell(NOTEBOOK_SOURCE)]
    nbformat.write(nb, root / "label.ipynb")
    # a private Jupyter config, data, runtime and settings folder: nothing from ~/.jupyter leaks in; the kernelspec
    # and the widgets extension are found under .venv/share/jupyter, which stays on the search path
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_DATA_DIR=str(tmp / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), IPYTHONDIR=str(tmp / "ipython"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
               HELPERS_QUIET="1", OMP_NUM_THREADS="1")
    port = _free_port()
    log = open(tmp / "jupyter.log", "wb")
    cmd = [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--allow-root",
           "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
           "--LabApp.extension_manager=readonly", *course_options,
           # half JupyterLab's IOPub message limit, as iopub_guard.py fails a cell at: this machine is slower than
           # a learner's, and lesson 02's old flood (3,171 messages) took longer than 3 s here when it was busy
           f"--ZMQChannelsWebsocketConnection.iopub_msg_rate_limit={RATE_LIMIT:g}"]
    server = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def log_tail() -> str:
        log.flush()
        return (tmp / "jupyter.log").read_text(errors="replace")[-3000:]

    try:
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited with status {server.returncode}:\n{log_tail()}")
            try:
                if _get(f"{url}/api/status") == 200:
                    break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer on {url} within 90 s:\n{log_tail()}")
            time.sleep(0.25)
        yield url, root, log_tail
    finally:
        server.send_signal(signal.SIGTERM)  # the server shuts its kernels down on SIGTERM
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


NEWS_PROMPT = "Would you like to get notified about official Jupyter news?"


def _new_page(browser):
    """A page, and the list its script errors and dialogs (an ``alert()`` would be one) are collected in."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page_errors: list[str] = []
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    page.on("dialog", lambda d: page_errors.append(f"dialog: {d.message}"))
    return page, page_errors


def _run_notebook(page, url: str, name: str) -> None:
    """Open ``name`` in JupyterLab, wait for its kernel, and run every cell through JupyterLab's own command.
    (``?reset``: a fresh workspace, so a notebook an earlier test opened does not come back as the current one.)"""
    page.goto(f"{url}/lab/tree/{name}?reset", timeout=90_000)
    page.wait_for_function(
        "(name) => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
        " return !!(w && w.context && w.context.path === name && k && k.status === 'idle'); }", arg=name,
        timeout=90_000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")


def _notification_settings(page) -> dict:
    """The notification plugin's settings as this page loaded them: the schema's defaults (where the course's
    lab/overrides.json lands) and the user's own settings (none, in a fresh settings folder)."""
    return page.evaluate(
        "async () => { const p = await window.jupyterapp.serviceManager.settings.fetch("
        "'@jupyterlab/apputils-extension:notification'); const d = p.schema.properties;"
        " return {fetchNews: d.fetchNews.default, checkForUpdates: d.checkForUpdates.default, raw: p.raw}; }")


def test_widget_labels_pairs_in_jupyterlab_and_saves_them(lab):
    from playwright.sync_api import expect, sync_playwright

    url, root, log_tail = lab
    ARTIFACTS.mkdir(exist_ok=True)
    started = time.monotonic()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page, page_errors = _new_page(browser)
            _run_notebook(page, url, "label.ipynb")
            widget = page.locator(".labeling-widget")
            progress = widget.locator(".labeling-progress")
            try:
                expect(progress).to_have_text(f"labeled 0 of {ITEMS}", timeout=60_000)
            except AssertionError as e:
                raise AssertionError(f"the widget did not appear: {e}\n{log_tail()}") from None
            cells = page.locator(".jp-Notebook .jp-Cell").count()
            widget.screenshot(path=str(ARTIFACTS / "labeling-widget.png"))

            def act(selector: str, expected_done: int) -> None:
                page.wait_for_timeout(450)  # longer than the widget's double-click guard (0.3 s)
                widget.locator(selector).click()
                expect(progress).to_have_text(f"labeled {expected_done} of {ITEMS}", timeout=15_000)

            act(".labeling-a", 1)
            # the hostile pair is on screen now: its strings must be text, with no element or script made of them
            shown = widget.locator(".labeling-prompt, .labeling-left, .labeling-right")
            expect(widget.locator(".labeling-prompt")).to_contain_text(HOSTILE_PROMPT)
            texts = " ".join(shown.all_inner_texts())
            for hostile in (HOSTILE_LEFT, HOSTILE_RIGHT):
                assert hostile in texts
            assert shown.locator("img, script, iframe, svg, b, mjx-container, .MathJax").count() == 0
            assert widget.locator("img, script, iframe, svg").count() == 0
            page.wait_for_timeout(300)  # give an onerror / onload handler time to fire, if one had been created
            assert page.evaluate("window.__pwned") is None
            widget.screenshot(path=str(ARTIFACTS / "labeling-widget-hostile.png"))

            act(".labeling-b", 2)
            act(".labeling-tie", 3)
            act(".labeling-undo", 2)
            # a key typed in the widget's keys box labels; JupyterLab's command-mode keys stay quiet there
            page.wait_for_timeout(450)
            widget.locator(".labeling-keys input").click()
            page.keyboard.press("x")
            expect(progress).to_have_text(f"labeled 3 of {ITEMS}", timeout=15_000)
            page.wait_for_timeout(450)
            page.keyboard.press("b")  # "b" in command mode would insert a cell below
            expect(progress).to_have_text(f"labeled 4 of {ITEMS}", timeout=15_000)
            assert page.locator(".jp-Notebook .jp-Cell").count() == cells
            page.wait_for_timeout(450)
            widget.locator(".labeling-rationale input").fill("the other one is rude")
            act(".labeling-a", 5)
            # a double click labels one pair, never two (the last pair stays unlabeled)
            page.wait_for_timeout(450)
            widget.locator(".labeling-skip").dblclick()
            expect(progress).to_have_text(f"labeled 6 of {ITEMS}", timeout=15_000)
            page.wait_for_timeout(1000)
            expect(progress).to_have_text(f"labeled 6 of {ITEMS}")
            print("status after the double click:", widget.locator(".labeling-status").inner_text())
            # the course's Lab settings (make lab): JupyterLab never asked about news, and will not fetch any
            assert page.get_by_text(NEWS_PROMPT).count() == 0
            settings = _notification_settings(page)
            assert (settings["fetchNews"], settings["checkForUpdates"]) == ("false", False), settings
            assert settings["raw"].strip() in ("", "{}"), settings
            assert not page_errors, page_errors
        finally:
            browser.close()

    # the file on disk: one record per action, in order, and the labels it adds up to
    path = root / "labels" / f"{ANNOTATOR}.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["action"], r.get("label")) for r in records] == [
        ("label", "a"), ("label", "b"), ("label", "tie"), ("undo", None), ("label", "both_bad"), ("label", "b"),
        ("label", "a"), ("label", "skip")]
    for r in records:
        assert r["annotator"] == ANNOTATOR and r["item"] and r["time"]
        assert r["action"] == "undo" or isinstance(r["swap"], bool)
    assert records[3]["item"] == records[2]["item"]  # the undo withdrew the tie
    assert records[1]["prompt"] == HOSTILE_PROMPT
    assert records[6]["rationale"] == "the other one is rude"
    labels = labeling.read_labels(root / "labels")
    assert not labels.damaged
    assert [lab.label for lab in labels.labels] == ["a", "b", "both_bad", "b", "a", "skip"]
    assert labeling.export_pairs(labels).counts == {"pairs": 4, "tie": 0, "both_bad": 1, "skip": 1}
    print(f"browser part took {time.monotonic() - started:.1f} s")


# ----------------------------------------------------------------------------------------------------------------
# lesson 02, section 8, as it is

LESSON_02 = ROOT / "notebooks" / "02-reward-modeling.ipynb"
# the lesson's set-up cell, the cell that makes the pool of pairs (and shows a widget), and the cell that drives two
# simulated annotators through the widget and prints the report, found by their cell ids
LESSON_02_CELLS = {"setup": "97f768ce", "pool": "5b2ecb0f", "simulate": "cb27ad73"}


def test_lesson_02_simulated_annotators_report_reaches_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    url, root, log_tail = lab
    lesson = nbformat.read(LESSON_02, as_version=4)
    by_id = {cell.get("id"): cell for cell in lesson.cells}
    assert "simulate(" in by_id[LESSON_02_CELLS["simulate"]].source, "lesson 02's simulate cell has moved"
    nb = nbformat.v4.new_notebook(metadata=lesson.metadata)
    nb.cells = [nbformat.v4.new_code_cell(by_id[cell_id].source) for cell_id in LESSON_02_CELLS.values()]
    nb.cells.append(nbformat.v4.new_code_cell("print('section 8 is done')"))
    nbformat.write(nb, root / "lesson-02-section-8.ipynb")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            _run_notebook(page, url, "lesson-02-section-8.ipynb")
            outputs = page.locator(".jp-Notebook .jp-CodeCell .jp-OutputArea")
            done = page.locator(".jp-OutputArea-output", has_text="section 8 is done")
            try:
                done.wait_for(timeout=180_000)
            except Exception as e:
                raise AssertionError(f"section 8 did not finish: {e}\n{log_tail()}") from None
            report = outputs.nth(2).inner_text()
            page_text = page.locator(".jp-Notebook").inner_text()
        finally:
            browser.close()
    assert "IOPub message rate exceeded" not in page_text and "IOPub data rate exceeded" not in page_text
    assert "IOPub message rate exceeded" not in log_tail()
    # what lesson 02 saved as this cell's output is what the browser shows
    saved = "".join(o.get("text", "") for o in by_id[LESSON_02_CELLS["simulate"]].outputs if o.output_type == "stream")
    assert "agreement careful / lefty" in saved
    assert report.split() == saved.split(), report


# ----------------------------------------------------------------------------------------------------------------
# lessons 05 and 06, whole, as a learner runs them

LESSON_END = {"05-choosing-a-method.ipynb": "this notebook took", "06-implementation.ipynb": "this notebook ran in"}


@pytest.mark.timeout(420)
@pytest.mark.parametrize("name", sorted(LESSON_END))
def test_lesson_runs_to_its_end_in_jupyterlab(lab, name):
    """Run all: the last cell's output reaches the page, no cell shows an error or stderr, no IOPub limit is hit; in
    lesson 06, the widget renders and a click there saves a label next to the notebook."""
    from playwright.sync_api import expect, sync_playwright

    url, root, log_tail = lab
    lesson = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    for cell in lesson.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(lesson, root / name)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page, page_errors = _new_page(browser)
            _run_notebook(page, url, name)
            end = page.locator(".jp-OutputArea-output", has_text=LESSON_END[name])
            try:
                end.wait_for(timeout=360_000)
            except Exception as e:
                raise AssertionError(f"{name} did not reach its last cell: {e}\n{log_tail()}") from None
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            assert errors.count() == 0, errors.all_inner_texts()[:3]
            page_text = page.locator(".jp-Notebook").inner_text()
            if name.startswith("06"):
                widget = page.locator(".labeling-widget")
                expect(widget.locator(".labeling-progress")).to_contain_text("labeled 0 of", timeout=30_000)
                widget.locator(".labeling-a").click()
                expect(widget.locator(".labeling-progress")).to_contain_text("labeled 1 of", timeout=15_000)
            assert not page_errors, page_errors
        finally:
            browser.close()
    assert "IOPub message rate exceeded" not in page_text and "IOPub data rate exceeded" not in page_text
    assert "IOPub message rate exceeded" not in log_tail()
    if name.startswith("06"):
        labels = labeling.read_labels(root / "labels" / "06")
        assert [lab.label for lab in labels.labels] == ["a"]

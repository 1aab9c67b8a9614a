"""Grade a folder of submitted exercise notebooks: ``python -m helpers grade DIR``.

One notebook per student (the student's name is the file's stem, made safe: see :func:`student_names`). For each
submission the grader

1. reads it (nbformat 4; nbformat 3 is upgraded and a byte-order mark skipped, with a note) and takes only the
   answer cells (nbgrader ``solution`` cells, matched by ``grade_id``);
2. screens each code answer with :func:`.screen.reference_use` (a static, best-effort reading of its code): an
   answer that reaches the course's reference implementation or the checks is not run — the stub takes its place —
   and earns nothing;
3. puts the answers into its own copy of the released exercise notebook, generated from the solution notebook, with
   its own check cells (the checks the learner sees plus the hidden cases), so deleting or editing check cells in a
   submission changes nothing;
4. runs that notebook in a sandbox (:mod:`.sandbox`: bubblewrap, no network, its own processes, a memory limit, a
   copy of ``helpers`` and nothing else of the course) in a fresh kernel (nbclient) with a time limit for the whole
   notebook (skipping the demonstration cells tagged ``grader-skip``); at the limit the kernel is killed and what
   has not run scores 0. Inside, each check only *records* what the learner's functions returned;
5. judges each check cell in the grader's own process (:func:`judge`): the same check code, replayed on the recorded
   outputs, computes the reference, names the mistake and decides the points. Nothing the notebook does to
   ``torch`` or the checks inside its kernel reaches this process.

It writes ``grades.csv`` (student, exercise, points, max_points, notes) and ``feedback/<student>.txt`` (per exercise
the points and the first line of the failure message), each atomically once every notebook is graded. A notebook
that errors, hangs, is not even JSON or has any file name costs that student what it did not earn, never the grader
run. Used by instructors, for every lesson's exercise notebook; see the README, "For instructors", for what this
guarantees and what it does not.
"""
from __future__ import annotations

import ast
import codecs
import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from . import RECORD_ENV, sandbox
from . import exercises as ex
from .screen import reference_use  # step 2, read here by the tests and the README

DEFAULT_TIMEOUT_S = 120.0
GRACE_S = 30.0           # beyond the notebook's limit, how long a grading process may take to stop on its own
MAX_OUTPUT_CHARS = 200_000  # per cell; an answer that prints without end cannot fill the grader's memory
MAX_RECORD_BYTES = 64 * 1024 ** 2  # what the checks may record per notebook (the course's cases need a few MB)

# ----------------------------------------------------------------------------------------------------------------
# the assignment: what is graded, and the grader's own copy of the notebook

@dataclass
class Assignment:
    """One exercise notebook as the grader sees it, made from its solution notebook."""
    name: str                        # e.g. "01-alignment-problem"
    notebook: str                    # the released notebook with the hidden tests kept, as JSON text
    max_points: dict[str, float]     # exercise label -> points of its check cells, in notebook order
    answer_ids: set[str]             # grade_ids of the answer cells

    @classmethod
    def from_solutions(cls, path: Path) -> "Assignment":
        nb = ex.release(ex.read(path), keep_hidden=True)
        max_points: dict[str, float] = {}
        answer_ids = set()
        for cell in nb.cells:
            meta = ex.nbgrader_meta(cell)
            if ex.is_check(cell):
                label = ex.exercise_label(meta["grade_id"])
                max_points[label] = max_points.get(label, 0) + float(meta.get("points", 0))
            if ex.is_answer(cell):
                answer_ids.add(meta["grade_id"])
        name = Path(path).name.removesuffix("-solutions.ipynb")
        return cls(name, ex.dumps(nb), max_points, answer_ids)


def _answers(data) -> dict[str, tuple[str, str]]:
    """grade_id -> (cell type, source) of every answer cell of a parsed submission (first one wins)."""
    out: dict[str, tuple[str, str]] = {}
    cells = data.get("cells") if isinstance(data, dict) else None
    if not isinstance(cells, list):
        raise ValueError("it has no list of cells")
    for cell in cells:
        if not isinstance(cell, dict):
            continue
        meta = ex.nbgrader_meta(cell) if isinstance(cell.get("metadata"), dict) else {}
        grade_id = meta.get("grade_id")
        if not meta.get("solution") or not isinstance(grade_id, str) or grade_id in out:
            continue
        source = cell.get("source", "")
        source = "".join(s for s in source if isinstance(s, str)) if isinstance(source, list) else str(source)
        out[grade_id] = (str(cell.get("cell_type")), source)
    return out


def choose_assignment(submissions: list[Path], assignments: list[Assignment]) -> Assignment:
    """The assignment a folder of submissions answers: the one whose answer cells they share most."""
    if len(assignments) == 1:
        return assignments[0]
    votes = {a.name: 0 for a in assignments}
    for path in submissions:
        try:
            ids = set(_answers(read_submission(path)[0]))
        except Exception:
            continue
        best = max(assignments, key=lambda a: len(a.answer_ids & ids))
        if best.answer_ids & ids:
            votes[best.name] += 1
    name, count = max(votes.items(), key=lambda kv: kv[1])
    if count == 0:
        raise SystemExit("cannot tell which exercise notebook these submissions answer; pass --assignment NN-topic")
    return next(a for a in assignments if a.name == name)


# ----------------------------------------------------------------------------------------------------------------
# reading a submission: any file name, nbformat 4 (3 and a byte-order mark are read too)

MAX_NOTEBOOK_BYTES = 50 * 1024 ** 2
_UNSAFE = re.compile(r"[^\w.\-]+")
# ANSI escape sequences, then the other control characters (but tab and newline) and Unicode's direction overrides
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean(text) -> str:
    """``text`` without terminal escapes and control characters (but newlines and tabs): safe in feedback and CSV."""
    text = str(text).encode("utf-8", "replace").decode("utf-8")  # lone surrogates from odd file names
    return _CONTROL.sub("", _ANSI.sub("", text))


def student_names(paths: list[Path]) -> dict[Path, tuple[str, str | None]]:
    """For each submission, the student's name (the file's stem, made safe for a file and a CSV cell: letters,
    digits, ``_ . -``; unique) and a note saying how it was changed (None when it was not)."""
    out, used = {}, set()
    for path in paths:
        raw = os.fsencode(path.name)
        raw = raw[:-len(b".ipynb")] if raw.endswith(b".ipynb") else raw
        text = raw.decode("utf-8", "replace")
        safe = _UNSAFE.sub("_", unicodedata.normalize("NFC", text)).strip("._")[:80] or "student"
        name, i = safe, 2
        while name.lower() in used:
            name, i = f"{safe}-{i}", i + 1
        used.add(name.lower())
        original = raw.decode("utf-8", "backslashreplace")
        out[path] = (name, None if name == original else f"file name '{clean(original)}' graded as '{name}'")
    return out


def read_submission(path: Path) -> tuple[dict, list[str]]:
    """A submitted notebook as nbformat-4 JSON, and notes on what reading it took. Raises ValueError when it is not
    a notebook the grader can read (not UTF-8 JSON, not a notebook, nbformat other than 3 or 4, too large)."""
    import nbformat
    notes = []
    raw = Path(path).read_bytes()
    if len(raw) > MAX_NOTEBOOK_BYTES:
        raise ValueError(f"it is larger than {MAX_NOTEBOOK_BYTES // 1024 ** 2} MB")
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
        notes.append("the file starts with a byte-order mark; it was read without it")
    try:
        text = raw.decode("utf-8")
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{type(e).__name__}") from None
    if not isinstance(data, dict):
        raise ValueError("it is JSON, but not a notebook")
    version = data.get("nbformat")
    if version == 3:
        try:
            data = dict(nbformat.convert(nbformat.reader.reads(text), 4))
        except Exception as e:
            raise ValueError(f"an nbformat-3 notebook that could not be upgraded ({type(e).__name__})") from None
        notes.append("an nbformat-3 notebook, upgraded to nbformat 4 for grading")
    elif version not in (4, None):
        raise ValueError(f"nbformat {version!r} (the grader reads 4, and upgrades 3)")
    return data, notes


# ----------------------------------------------------------------------------------------------------------------
# grading one notebook: run it sandboxed (the runner), then judge the checks in the grader's own process

@dataclass
class Result:
    """One student's grades."""
    student: str
    points: dict[str, float]                 # exercise label -> points earned
    messages: dict[str, str]                 # exercise label -> "passed" or the first line of why not
    notes: list[str] = field(default_factory=list)
    free_text: dict[str, str] = field(default_factory=dict)
    run_notes: list[str] = field(default_factory=list)  # how it was graded, when unusual: into the CSV too


def _zero(student: str, assignment: Assignment, why: str) -> Result:
    return Result(student, {k: 0.0 for k in assignment.max_points}, {k: why for k in assignment.max_points})


def _first_line(error: dict) -> str:
    evalue = str(error.get("evalue", "")).strip()
    line = evalue.splitlines()[0] if evalue else ""
    return f"{error.get('ename', 'Error')}: {line}" if line else str(error.get("ename", "error"))


def _client_class():
    from nbclient import NotebookClient

    class CappedClient(NotebookClient):
        """nbclient, keeping at most MAX_OUTPUT_CHARS of output per cell (errors are always kept)."""

        def output(self, outs, msg, display_id, cell_index):
            chars = self.__dict__.setdefault("_output_chars", {})  # cell index -> characters of output so far
            chars[cell_index] = chars.get(cell_index, 0) + len(str(msg.get("content", "")))
            if msg["msg_type"] != "error" and chars[cell_index] > MAX_OUTPUT_CHARS:
                return None
            return super().output(outs, msg, display_id, cell_index)

    return CappedClient


def _graded_notebook(answers: dict, assignment: Assignment, result: Result):
    """The grader's copy of the released notebook with the submission's screened answers; exercise -> why an
    answer was not run."""
    import nbformat
    nb = nbformat.reads(assignment.notebook, as_version=4)
    flagged: dict[str, str] = {}
    for cell in nb.cells:
        if not ex.is_answer(cell):
            continue
        grade_id = ex.nbgrader_meta(cell)["grade_id"]
        label = ex.exercise_label(grade_id)
        if grade_id not in answers:
            result.notes.append(f"no answer cell for {label} (grade_id {grade_id}): the stub was used")
            continue
        cell_type, source = answers[grade_id]
        if cell_type != cell.cell_type:
            result.notes.append(f"the answer cell for {label} is {cell_type}, expected {cell.cell_type}: ignored")
            continue
        if cell.cell_type == "markdown":
            if source.strip() and source.strip() != ex.TEXT_STUB:
                result.free_text[label] = source.strip()
            continue
        why = reference_use(source)
        if why:
            flagged[label] = f"0 points: the answer was not run because {why}"
            continue
        cell.source = source
    return nb, flagged


def run_notebook(job: dict) -> None:
    """The runner (inside the sandbox): execute the notebook ``job["notebook"]`` in a fresh kernel within the time
    limit, the checks recording the learner's outputs in ``job["out"]/calls.jsonl``; write what each cell did to
    ``job["out"]/run.json``. Nothing it writes decides a point: the judge does (see :func:`judge`)."""
    import nbformat
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    start = time.monotonic()
    out = Path(job["out"])
    nb = nbformat.read(job["notebook"], as_version=4)
    timeout = float(job["timeout"])
    status: dict[int, str] = {}
    stopped = ""
    with tempfile.TemporaryDirectory(prefix="work-") as work:
        client = _client_class()(nb, kernel_name="python3", allow_errors=True, record_timing=False,
                                 shutdown_kernel="immediate", startup_timeout=int(max(10, min(60, timeout))),
                                 skip_cells_with_tag=ex.GRADER_SKIP_TAG, resources={"metadata": {"path": work}})
        client.on_cell_executed = lambda cell, cell_index, execute_reply: status.__setitem__(
            cell_index, execute_reply["content"]["status"] if execute_reply else "error")
        env = dict(ex.kernel_env(job.get("threads")), **{RECORD_ENV: str(out / "calls.jsonl")})
        try:
            with client.setup_kernel(env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
                kernel_pid = getattr(getattr(client.km, "provisioner", None), "pid", None)
                if job.get("pid_file") and kernel_pid:
                    Path(job["pid_file"]).write_text(str(kernel_pid))
                for index, cell in enumerate(nb.cells):
                    if cell.cell_type != "code":
                        continue
                    remaining = timeout - (time.monotonic() - start)
                    if remaining < 1:
                        raise CellTimeoutError("time limit reached")
                    client.timeout = int(remaining)
                    client.execute_cell(cell, index)
        except CellTimeoutError:
            stopped = f"not run: the notebook reached the time limit of {timeout:g} s and its kernel was stopped"
        except DeadKernelError:
            stopped = "not run: the kernel died (an answer may have exited or used too much memory)"
        except Exception as e:  # a kernel that would not start, a broken connection, ...
            stopped = f"not run: the notebook could not be run ({type(e).__name__}: {str(e)[:200]})"
    errors = {}
    for index, cell in enumerate(nb.cells):
        found = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if found:
            errors[str(index)] = _first_line(found[0])
    (out / "run.json").write_text(json.dumps({"status": {str(k): v for k, v in status.items()}, "errors": errors,
                                              "stopped": stopped}))


def _check_calls(source: str) -> list[tuple[str, dict]] | None:
    """The checks a check cell calls, as (check name, keyword arguments), when the cell is only such calls
    (``checks.check_x(answer, hidden=True)``, as every course check cell is); None otherwise."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    calls = []
    for stmt in tree.body:
        call = stmt.value if isinstance(stmt, ast.Expr) else None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                and isinstance(call.func.value, ast.Name) and call.func.value.id == "checks"
                and call.func.attr.startswith("check_") and all(isinstance(a, ast.Name) for a in call.args)):
            return None
        try:
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        except ValueError:
            return None
        calls.append((call.func.attr, kwargs))
    return calls or None


def _read_records(path: Path) -> dict[str, dict]:
    """The checks' records a run wrote (untrusted: JSON only, bounded), by record key; the last one of a key wins."""
    records = {}
    if not path.is_file() or path.stat().st_size > MAX_RECORD_BYTES:
        return records
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(record, dict) and isinstance(record.get("key"), str):
                records[record["key"]] = record
    return records


def _read_run(path: Path) -> dict:
    try:
        run = json.loads(path.read_text(encoding="utf-8", errors="replace")) if path.stat().st_size < 10 ** 7 else {}
    except (OSError, ValueError, RecursionError):
        run = {}
    run = run if isinstance(run, dict) else {}
    return {key: run.get(key) if isinstance(run.get(key), kind) else kind()
            for key, kind in (("status", dict), ("errors", dict), ("stopped", str))}


def judge(nb, records: dict[str, dict], run: dict) -> dict[int, tuple[bool, str]]:
    """Check cell index -> (passed, message), decided in this process: each check the cell calls is replayed on the
    learner's recorded outputs (:func:`helpers.assignments.checks.base.replay`), so what the notebook did to
    ``torch`` or the checks does not matter. ``run`` (what the runner said) only explains a check that never ran."""
    import contextlib
    import io
    from . import checks
    from .checks import base

    verdicts = {}
    for index, cell in enumerate(nb.cells):
        if not ex.is_check(cell):
            continue
        calls = _check_calls(cell.source)
        error = str(run["errors"].get(str(index), ""))[:500]
        if calls is None:  # not a cell of check calls: only the notebook's own status is known (never in the course)
            ok = run["status"].get(str(index)) == "ok" and not error
            verdicts[index] = (ok, "passed" if ok else error or run["stopped"] or "not run")
            continue
        verdict = (True, "passed")
        for name, kwargs in calls:
            record = records.get(base.record_key(name, kwargs))
            if record is None:
                verdict = (False, error or run["stopped"] or f"not run: {name} did not run in the notebook")
                break
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    base.replay(getattr(checks, name), record, **kwargs)
            except Exception as e:
                verdict = (False, _first_line({"ename": type(e).__name__, "evalue": str(e)}))
                break
        verdicts[index] = verdict
    return verdicts


def grade_notebook(path: Path, assignment: Assignment, timeout: float = DEFAULT_TIMEOUT_S,
                   threads: int | None = 1, pid_file: Path | None = None, sandboxed: bool = True,
                   memory: int | None = sandbox.DEFAULT_MEMORY_BYTES, student: str | None = None) -> Result:
    """Grade one submission (see the module docstring). Never raises for a bad notebook: it scores 0 instead."""
    student = student or Path(path).stem
    try:
        data, read_notes = read_submission(Path(path))
        answers = _answers(data)
    except Exception as e:  # not JSON, not a notebook, unreadable
        why = str(e) if isinstance(e, ValueError) else type(e).__name__
        return _zero(student, assignment, f"not graded: the file is not a valid notebook ({why})")
    result = Result(student, {k: 0.0 for k in assignment.max_points}, {}, notes=list(read_notes),
                    run_notes=list(read_notes))
    nb, flagged = _graded_notebook(answers, assignment, result)
    with tempfile.TemporaryDirectory(prefix="grade-") as scratch:
        in_dir, out_dir = Path(scratch, "in"), Path(scratch, "out")
        in_dir.mkdir()
        out_dir.mkdir()
        (in_dir / "notebook.ipynb").write_text(ex.dumps(nb), encoding="utf-8")
        where_in, where_out = (sandbox.IN, sandbox.OUT) if sandboxed else (str(in_dir), str(out_dir))
        job = {"notebook": f"{where_in}/notebook.ipynb", "out": where_out, "timeout": timeout, "threads": threads,
               "pid_file": None if sandboxed or pid_file is None else str(pid_file)}
        (in_dir / "run.json").write_text(json.dumps(job))
        argv = [sys.executable, "-m", "helpers.assignments.grading", "--run", f"{where_in}/run.json"]
        if sandboxed:
            cmd, env = sandbox.command(argv, ex.ROOT / "helpers", in_dir, out_dir), None
        else:
            cmd, env = argv, dict(os.environ, PYTHONPATH=os.pathsep.join(
                [str(ex.ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
        with open(Path(scratch, "stderr"), "wb") as err:
            proc = subprocess.Popen(cmd, cwd=scratch, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                    preexec_fn=sandbox.limit_memory(memory))
        try:
            from . import checks  # noqa: F401  (the judge's imports, while the notebook runs)
            proc.wait(timeout=timeout + GRACE_S / 2)
        except subprocess.TimeoutExpired:
            result.notes.append(f"the run was stopped after {timeout + GRACE_S / 2:g} s")
        finally:
            proc.kill()  # the sandbox (bwrap) ends, and with it every process started in it
            proc.wait()
            text = Path(pid_file).read_text().strip() if pid_file and Path(pid_file).exists() else ""
            if text.isdigit():  # without a sandbox: the kernel leads its own process group
                _kill_group(int(text))
        run = _read_run(out_dir / "run.json")
        records = _read_records(out_dir / "calls.jsonl")
        err = Path(scratch, "stderr").read_text(errors="replace").strip().splitlines()
    if run["stopped"]:
        result.notes.append(clean(run["stopped"]).removeprefix("not run: ")[:300])
    elif not run["status"]:
        result.notes.append("the notebook did not run (the sandbox or the kernel did not start)"
                            + (f": {clean(err[-1])[:300]}" if err else ""))

    for index, (ok, message) in judge(nb, records, run).items():
        meta = ex.nbgrader_meta(nb.cells[index])
        label = ex.exercise_label(meta["grade_id"])
        if ok:
            result.points[label] += float(meta.get("points", 0))
            result.messages.setdefault(label, "passed")
        else:
            result.messages[label] = clean(message)[:500]
    for label, why in flagged.items():
        result.points[label] = 0.0
        result.messages[label] = why
    return result


# ----------------------------------------------------------------------------------------------------------------
# many notebooks, in parallel processes

def _worker_main(job_path: str) -> None:
    """Entry point of one grading process: read the job, grade, write the result as JSON."""
    job = json.loads(Path(job_path).read_text())
    assignment = Assignment(job["name"], job["notebook"], job["max_points"], set(job["answer_ids"]))
    result = grade_notebook(Path(os.fsdecode(bytes.fromhex(job["submission"]))), assignment, job["timeout"],
                            job["threads"], Path(job["pid_file"]), job["sandboxed"], job["memory"], job["student"])
    Path(job["result"]).write_text(json.dumps(result.__dict__))


def _kill_group(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` (a process this module started), tolerating one already gone."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(pid, signal.SIGKILL)
        else:  # Windows: no process groups; kill the process itself
            os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError, OSError):
        pass


@dataclass
class _Job:
    path: Path
    student: str
    proc: subprocess.Popen
    started: float
    result_file: Path
    pid_file: Path
    stderr_file: Path

    def kill(self) -> None:
        """Stop the grading process, its sandbox and its kernel (each leads its own process group)."""
        _kill_group(self.proc.pid)
        text = self.pid_file.read_text().strip() if self.pid_file.exists() else ""
        if text.isdigit():
            _kill_group(int(text))
        self.proc.wait()


def grade_all(submission_paths: list[Path], assignment: Assignment, timeout: float = DEFAULT_TIMEOUT_S,
              workers: int = 2, log=print, sandboxed: bool = True,
              memory: int | None = sandbox.DEFAULT_MEMORY_BYTES) -> list[Result]:
    """Grade every submission, ``workers`` at a time, each in its own process and kernel; results in input order.

    A grading process that outlives its notebook's time limit by ``GRACE_S`` is killed with its kernel.
    """
    results: dict[Path, Result] = {}
    names = student_names([Path(p) for p in submission_paths])
    total = sum(assignment.max_points.values())
    with tempfile.TemporaryDirectory(prefix="grading-") as tmp:
        tmp = Path(tmp)
        base = {"name": assignment.name, "notebook": assignment.notebook, "max_points": assignment.max_points,
                "answer_ids": sorted(assignment.answer_ids), "timeout": timeout,
                "threads": 1 if workers > 1 else None, "sandboxed": sandboxed, "memory": memory}
        queue = list(enumerate(submission_paths))
        running: list[_Job] = []
        # this very helpers package, in the grading processes (and, unsandboxed, their kernels)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(ex.ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
        try:
            while queue or running:
                while queue and len(running) < max(1, workers):
                    i, path = queue.pop(0)
                    student, renamed = names[Path(path)]
                    job = dict(base, submission=os.fsencode(Path(path).resolve()).hex(), student=student,
                               result=str(tmp / f"{i}.result.json"), pid_file=str(tmp / f"{i}.kernel.pid"))
                    (tmp / f"{i}.job.json").write_text(json.dumps(job))
                    with open(tmp / f"{i}.stderr", "wb") as err:
                        proc = subprocess.Popen(
                            [sys.executable, "-m", "helpers.assignments.grading", "--worker",
                             str(tmp / f"{i}.job.json")],
                            cwd=str(tmp), env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=err,
                            preexec_fn=sandbox.limit_memory(memory))  # the judge reads untrusted records too
                    running.append(_Job(Path(path), student, proc, time.monotonic(), Path(job["result"]),
                                        Path(job["pid_file"]), tmp / f"{i}.stderr"))
                time.sleep(0.1)
                for job in list(running):
                    overdue = time.monotonic() - job.started > timeout + GRACE_S
                    if job.proc.poll() is None and not overdue:
                        continue
                    if job.proc.poll() is None:
                        job.kill()
                    running.remove(job)
                    result = _collect(job, assignment, overdue, timeout)
                    renamed = names[job.path][1]
                    if renamed:
                        result.notes.insert(0, renamed)
                        result.run_notes.insert(0, renamed)
                    if not sandboxed:
                        result.run_notes.append("graded without a sandbox (--no-sandbox)")
                    results[job.path] = result
                    log(f"graded {clean(job.student)}: {sum(result.points.values()):g} / {total:g}")
        finally:  # interrupted (Ctrl-C): stop what still runs, kernels included
            for job in running:
                job.kill()
    return [results[Path(p)] for p in submission_paths]


def _collect(job: _Job, assignment: Assignment, overdue: bool, timeout: float) -> Result:
    try:
        result = Result(**json.loads(job.result_file.read_text()))
        result.student = job.student
        return result
    except Exception:
        why = (f"not graded: the grading process was stopped after {timeout + GRACE_S:g} s" if overdue
               else "not graded: the grading process failed")
        result = _zero(job.student, assignment, why)
        err = job.stderr_file.read_text(errors="replace").strip() if job.stderr_file.exists() else ""
        if err:
            result.notes.append(err.splitlines()[-1][:300])
        return result


# ----------------------------------------------------------------------------------------------------------------
# output, written once everything is graded, each file atomically (a temporary file, then a rename)

def _fmt(x: float) -> str:
    return f"{x:g}"


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def csv_text(results: list[Result], assignment: Assignment) -> str:
    """grades.csv: one row per student and exercise (free-text answers are graded by hand and are not in it), with
    the run's notes on how that student's notebook was graded when it was unusual (a renamed file, an upgraded
    notebook, no sandbox)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["student", "exercise", "points", "max_points", "notes"])
    for r in results:
        notes = clean("; ".join(r.run_notes)).replace("\n", " ")
        for label, max_points in assignment.max_points.items():
            writer.writerow([clean(r.student), label, _fmt(r.points.get(label, 0.0)), _fmt(max_points), notes])
    return buffer.getvalue()


def write_csv(results: list[Result], assignment: Assignment, path: Path) -> None:
    """Write grades.csv atomically (see :func:`csv_text`)."""
    _write_atomic(Path(path), csv_text(results, assignment))


def feedback_text(r: Result, assignment: Assignment) -> str:
    total, best = sum(r.points.values()), sum(assignment.max_points.values())
    lines = [f"{r.student}: {_fmt(total)} / {_fmt(best)} points ({assignment.name} exercises)", ""]
    for label, max_points in assignment.max_points.items():
        lines.append(f"{label:>5}  {_fmt(r.points.get(label, 0.0)):>3} / {_fmt(max_points):<3} "
                     f"{r.messages.get(label, 'not run')}")
    if r.notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in r.notes]
    if r.free_text:
        lines += ["", "Free-text answers (graded by hand, not in the points above):"]
        for label, text in r.free_text.items():
            lines += [f"[{label}]", text, ""]
    return clean("\n".join(lines).rstrip("\n") + "\n")


def grade_folder(folder: Path, out: Path | None = None, timeout: float = DEFAULT_TIMEOUT_S, workers: int = 2,
                 solutions: Path | None = None, assignment_name: str | None = None, log=print,
                 sandboxed: bool = True, memory: int | None = sandbox.DEFAULT_MEMORY_BYTES) -> list[Result]:
    """``python -m helpers grade``: grade every ``*.ipynb`` in ``folder``; write grades.csv and feedback/.

    Each notebook runs in the sandbox (:mod:`.sandbox`); where bubblewrap is missing or does not work this refuses
    to grade, unless ``sandboxed=False`` (``--no-sandbox``), which the CSV then notes on every row."""
    folder = Path(folder)
    out = Path(out) if out else folder
    submissions = sorted(p for p in folder.glob("*.ipynb") if p.is_file())
    if not submissions:
        raise SystemExit(f"no notebooks (*.ipynb) in {folder}")
    if sandboxed:
        why = sandbox.problem()
        if why:
            raise SystemExit(f"refusing to grade: {why}. Submissions are untrusted code; without a sandbox they run "
                             f"with your rights. To grade anyway (inside a disposable container or VM with no "
                             f"network and no credentials), pass --no-sandbox.")
    if solutions and Path(solutions).is_file():
        sources = [Path(solutions)]
    elif solutions:
        sources = sorted(Path(solutions).glob("[0-9][0-9]-*-solutions.ipynb"))
    else:
        sources = ex.solution_notebooks()
    if assignment_name:
        sources = [s for s in sources if s.name.startswith(assignment_name)]
    if not sources:
        raise SystemExit("no solution notebook to grade against (solutions/NN-topic-solutions.ipynb)")
    assignment = choose_assignment(submissions, [Assignment.from_solutions(s) for s in sources])
    log(f"grading {len(submissions)} notebooks against {assignment.name} ({_fmt(sum(assignment.max_points.values()))}"
        f" points), {workers} at a time, {timeout:g} s each, "
        + ("each in a sandbox" if sandboxed else "WITHOUT a sandbox (--no-sandbox)"))
    results = grade_all(submissions, assignment, timeout, workers, log, sandboxed, memory)
    out.mkdir(parents=True, exist_ok=True)
    (out / "feedback").mkdir(exist_ok=True)
    for r in results:
        _write_atomic(out / "feedback" / f"{r.student}.txt", feedback_text(r, assignment))
    write_csv(results, assignment, out / "grades.csv")
    log(f"wrote {out / 'grades.csv'} and {out / 'feedback'}/")
    return results


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--worker":
    _worker_main(sys.argv[2])
elif __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--run":
    run_notebook(json.loads(Path(sys.argv[2]).read_text()))

"""Grade a folder of submitted exercise notebooks: ``python -m helpers grade DIR``.

One notebook per student (the student's name is the file's stem). For each submission the grader

1. takes only the answer cells (nbgrader ``solution`` cells, matched by ``grade_id``) from the submission;
2. screens each code answer with :func:`reference_use` (a static, best-effort reading of its code with ``ast``): an
   answer that reaches the course's reference implementation or the checks is not run — the stub takes its place —
   and earns nothing;
3. puts the answers into its own copy of the released exercise notebook, generated from the solution notebook, with
   its own check cells (the checks the learner sees plus the hidden cases), so deleting or editing check cells in a
   submission changes nothing;
4. runs that notebook in a fresh kernel (nbclient) in a scratch folder, with HELPERS_QUIET=1 and a time limit for
   the whole notebook (skipping the demonstration cells tagged ``grader-skip``, which no answer or check needs);
   at the limit the kernel is killed and what has not run scores 0;
5. gives each check cell its points if it ran without error.

It writes ``grades.csv`` (student, exercise, points, max_points) and ``feedback/<student>.txt`` (per exercise the
points and the first line of the failure message). A notebook that errors, hangs or is not even JSON costs that
student what it did not earn, never the grader run. This is not a sandbox: answer code runs with the grader's user
rights (see the README, "For instructors"). Used by instructors, for every lesson's exercise notebook.
"""
from __future__ import annotations

import ast
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import exercises as ex

DEFAULT_TIMEOUT_S = 120.0
GRACE_S = 30.0           # beyond the notebook's limit, how long a grading process may take to stop on its own
MAX_OUTPUT_CHARS = 200_000  # per cell; an answer that prints without end cannot fill the grader's memory

# what an answer may not touch: the helpers package (but for the parts that describe the world), the checks, and
# the ways to reach them indirectly
ALLOWED_HELPERS_MODULES = {"world", "tokenizer", "model", "plots", "progress"}
PROTECTED_NAMES = {"helpers", "checks"}  # the check cells call checks.*; an answer must not rebind or touch them
REFERENCE_NAMES = {"optimal_policy", "optimal_objective", "wilson_interval", "gain_fraction", "frontier",
                   "enumerable_view", "scorecard", "score_samples"}
BLOCKED_MODULES = {"importlib", "builtins", "sys", "os", "inspect", "gc", "ctypes", "runpy", "IPython", "types",
                   "subprocess", "pkgutil", "imp", "marshal", "code", "codeop", "pickle", "shutil"}
BLOCKED_ATTRIBUTES = {"sys", "os", "importlib", "builtins", "modules", "inspect", "gc", "ctypes", "subprocess",
                      "f_globals", "f_locals", "f_builtins", "f_back", "gi_frame", "cr_frame", "ag_frame", "tb_frame"}
BLOCKED_CALLS = {"__import__", "eval", "exec", "compile", "getattr", "setattr", "delattr", "globals", "locals",
                 "vars", "get_ipython", "breakpoint"}


# ----------------------------------------------------------------------------------------------------------------
# static screening of an answer

def _python_source(code: str) -> str:
    """IPython syntax (magics, shell escapes) as the Python it runs as, so that ``%run`` or ``!cat`` is seen."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
        return TransformerManager().transform_cell(code)
    except Exception:  # IPython missing or the cell is not even IPython: read it as plain Python
        return code


def _docstring_nodes(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def reference_use(code: str) -> str | None:
    """Why an answer cell must not run (it reaches the course's implementation or the checks), or None.

    Static and best-effort: it reads the code, it does not run it. It flags imports of ``helpers`` (other than the
    world's description), any use of the names ``helpers`` and ``checks``, the names of the reference functions as
    attributes, strings that name them, dunder attributes, the builtins that import or evaluate code by name
    (``__import__``, ``eval``, ``exec``, ``getattr``, ...), modules that reach other modules (``importlib``,
    ``sys``, ``builtins``, ``inspect``, ...), IPython magics and shell escapes, and assignments to attributes of
    objects the cell did not create (patching ``torch`` or ``checks``). Code that does not parse is not flagged:
    it fails when it runs.
    """
    source = _python_source(code)
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    docstrings = _docstring_nodes(tree)
    local = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            local.add(node.id)
        elif isinstance(node, ast.arg):
            local.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            local.add(node.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root == "helpers":
                    return f"it imports {alias.name}: answers may not use the course's own package"
                if root in BLOCKED_MODULES:
                    return f"it imports {alias.name}, which can reach the course's implementation"
                if (alias.asname or root) in PROTECTED_NAMES:
                    return f"it rebinds the name {alias.asname or root!r}, which the check cells use"
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            root = module.split(".")[0]
            if node.level:
                return "it uses a relative import"
            if root == "helpers":
                parts = module.split(".")
                names = [a.name for a in node.names]
                inner = parts[1] if len(parts) > 1 else None
                if inner not in ALLOWED_HELPERS_MODULES and not (
                        inner is None and all(n in ALLOWED_HELPERS_MODULES for n in names)):
                    return (f"it imports {', '.join(names)} from {module}: calling the course's implementation "
                            f"earns nothing")
            if root in BLOCKED_MODULES:
                return f"it imports from {module}, which can reach the course's implementation"
            for alias in node.names:
                if (alias.asname or alias.name) in PROTECTED_NAMES:
                    return f"it rebinds the name {alias.asname or alias.name!r}, which the check cells use"
                if alias.name in REFERENCE_NAMES:
                    return f"it imports {alias.name}: calling the course's implementation earns nothing"
        elif isinstance(node, ast.Name):
            if node.id in PROTECTED_NAMES:
                return f"it uses the name {node.id!r}: answers may not call the course's package or the checks"
            if node.id in BLOCKED_CALLS or node.id.startswith("__"):
                return f"it uses {node.id}, which can reach code by name"
            if node.id in BLOCKED_MODULES and node.id not in local:
                return f"it uses {node.id}, which can reach the course's implementation"
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("__"):
                return f"it uses the attribute {node.attr}, which can reach the course's implementation"
            if node.attr in REFERENCE_NAMES:
                return f"it calls {node.attr} from the course's implementation: that earns nothing"
            if node.attr in BLOCKED_ATTRIBUTES:
                return f"it uses the attribute {node.attr}, which can reach the course's implementation"
            if isinstance(node.ctx, (ast.Store, ast.Del)) and _root_name(node) not in local:
                return f"it changes an attribute of {_root_name(node) or 'an object it did not create'}"
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            if PROTECTED_NAMES & set(node.names):
                return "it rebinds a name the check cells use"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value
            named = [w for w in ("helpers", *REFERENCE_NAMES) if w in text]
            if named:
                return f"a string in it names {named[0]}, as code that reaches the course's implementation does"
    for name in local & PROTECTED_NAMES:
        return f"it rebinds the name {name!r}, which the check cells use"
    return None


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
            ids = set(_answers(json.loads(path.read_text(encoding="utf-8"))))
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
# grading one notebook (in its own process: see _worker_main)

@dataclass
class Result:
    """One student's grades."""
    student: str
    points: dict[str, float]                 # exercise label -> points earned
    messages: dict[str, str]                 # exercise label -> "passed" or the first line of why not
    notes: list[str] = field(default_factory=list)
    free_text: dict[str, str] = field(default_factory=dict)


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


def grade_notebook(path: Path, assignment: Assignment, timeout: float = DEFAULT_TIMEOUT_S,
                   threads: int | None = 1, pid_file: Path | None = None) -> Result:
    """Grade one submission (see the module docstring). Never raises for a bad notebook: it scores 0 instead."""
    import nbformat
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    start = time.monotonic()
    student = Path(path).stem
    try:
        answers = _answers(json.loads(Path(path).read_text(encoding="utf-8")))
    except Exception as e:  # not JSON, not a notebook, unreadable
        return _zero(student, assignment, f"not graded: the file is not a valid notebook ({type(e).__name__})")
    nb = nbformat.reads(assignment.notebook, as_version=4)
    result = Result(student, {k: 0.0 for k in assignment.max_points}, {})
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

    status: dict[int, str] = {}
    stopped = ""
    with tempfile.TemporaryDirectory(prefix="grade-") as scratch:
        client = _client_class()(nb, kernel_name="python3", allow_errors=True, record_timing=False,
                                 shutdown_kernel="immediate", startup_timeout=int(max(10, min(60, timeout))),
                                 skip_cells_with_tag=ex.GRADER_SKIP_TAG,
                                 resources={"metadata": {"path": scratch}})
        client.on_cell_executed = lambda cell, cell_index, execute_reply: status.__setitem__(
            cell_index, execute_reply["content"]["status"] if execute_reply else "error")
        try:
            with client.setup_kernel(env=ex.kernel_env(threads), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL):
                kernel_pid = getattr(getattr(client.km, "provisioner", None), "pid", None)
                if pid_file is not None and kernel_pid:
                    Path(pid_file).write_text(str(kernel_pid))
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
    if stopped:
        result.notes.append(stopped.removeprefix("not run: "))

    for index, cell in enumerate(nb.cells):
        if not ex.is_check(cell):
            continue
        meta = ex.nbgrader_meta(cell)
        label = ex.exercise_label(meta["grade_id"])
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if status.get(index) == "ok" and not errors:
            result.points[label] += float(meta.get("points", 0))
            result.messages.setdefault(label, "passed")
        elif index not in status:
            result.messages[label] = stopped or "not run"
        else:
            result.messages[label] = _first_line(errors[0]) if errors else "the check cell failed"
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
    result = grade_notebook(Path(job["submission"]), assignment, job["timeout"], job["threads"],
                            Path(job["pid_file"]))
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
    proc: subprocess.Popen
    started: float
    result_file: Path
    pid_file: Path
    stderr_file: Path

    def kill(self) -> None:
        """Stop the grading process and its kernel (each leads its own process group)."""
        _kill_group(self.proc.pid)
        text = self.pid_file.read_text().strip() if self.pid_file.exists() else ""
        if text.isdigit():
            _kill_group(int(text))
        self.proc.wait()


def grade_all(submission_paths: list[Path], assignment: Assignment, timeout: float = DEFAULT_TIMEOUT_S,
              workers: int = 2, log=print) -> list[Result]:
    """Grade every submission, ``workers`` at a time, each in its own process and kernel; results in input order.

    A grading process that outlives its notebook's time limit by ``GRACE_S`` is killed with its kernel.
    """
    results: dict[Path, Result] = {}
    total = sum(assignment.max_points.values())
    with tempfile.TemporaryDirectory(prefix="grading-") as tmp:
        tmp = Path(tmp)
        base = {"name": assignment.name, "notebook": assignment.notebook, "max_points": assignment.max_points,
                "answer_ids": sorted(assignment.answer_ids), "timeout": timeout,
                "threads": 1 if workers > 1 else None}
        queue = list(enumerate(submission_paths))
        running: list[_Job] = []
        # this very helpers package, in the grading processes and their kernels, whatever the working directory
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(ex.ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
        try:
            while queue or running:
                while queue and len(running) < max(1, workers):
                    i, path = queue.pop(0)
                    job = dict(base, submission=str(Path(path).resolve()), result=str(tmp / f"{i}.result.json"),
                               pid_file=str(tmp / f"{i}.kernel.pid"))
                    (tmp / f"{i}.job.json").write_text(json.dumps(job))
                    with open(tmp / f"{i}.stderr", "wb") as err:
                        proc = subprocess.Popen(
                            [sys.executable, "-m", "helpers.assignments.grading", "--worker",
                             str(tmp / f"{i}.job.json")],
                            cwd=str(tmp), env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=err)
                    running.append(_Job(Path(path), proc, time.monotonic(), Path(job["result"]),
                                        Path(job["pid_file"]), tmp / f"{i}.stderr"))
                time.sleep(0.1)
                for job in list(running):
                    overdue = time.monotonic() - job.started > timeout + GRACE_S
                    if job.proc.poll() is None and not overdue:
                        continue
                    if job.proc.poll() is None:
                        job.kill()
                    running.remove(job)
                    results[job.path] = _collect(job, assignment, overdue, timeout)
                    log(f"graded {job.path.name}: {sum(results[job.path].points.values()):g} / {total:g}")
        finally:  # interrupted (Ctrl-C): stop what still runs, kernels included
            for job in running:
                job.kill()
    return [results[Path(p)] for p in submission_paths]


def _collect(job: _Job, assignment: Assignment, overdue: bool, timeout: float) -> Result:
    try:
        return Result(**json.loads(job.result_file.read_text()))
    except Exception:
        why = (f"not graded: the grading process was stopped after {timeout + GRACE_S:g} s" if overdue
               else "not graded: the grading process failed")
        result = _zero(job.path.stem, assignment, why)
        err = job.stderr_file.read_text(errors="replace").strip() if job.stderr_file.exists() else ""
        if err:
            result.notes.append(err.splitlines()[-1][:300])
        return result


# ----------------------------------------------------------------------------------------------------------------
# output

def _fmt(x: float) -> str:
    return f"{x:g}"


def write_csv(results: list[Result], assignment: Assignment, path: Path) -> None:
    """grades.csv: one row per student and exercise (free-text answers are graded by hand and are not in it)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["student", "exercise", "points", "max_points"])
        for r in results:
            for label, max_points in assignment.max_points.items():
                writer.writerow([r.student, label, _fmt(r.points.get(label, 0.0)), _fmt(max_points)])


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
    return "\n".join(lines).rstrip("\n") + "\n"


def grade_folder(folder: Path, out: Path | None = None, timeout: float = DEFAULT_TIMEOUT_S, workers: int = 2,
                 solutions: Path | None = None, assignment_name: str | None = None, log=print) -> list[Result]:
    """``python -m helpers grade``: grade every ``*.ipynb`` in ``folder``; write grades.csv and feedback/."""
    folder = Path(folder)
    out = Path(out) if out else folder
    submissions = sorted(p for p in folder.glob("*.ipynb") if p.is_file())
    if not submissions:
        raise SystemExit(f"no notebooks (*.ipynb) in {folder}")
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
        f" points), {workers} at a time, {timeout:g} s each")
    results = grade_all(submissions, assignment, timeout, workers, log)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(results, assignment, out / "grades.csv")
    (out / "feedback").mkdir(exist_ok=True)
    for r in results:
        (out / "feedback" / f"{r.student}.txt").write_text(feedback_text(r, assignment), encoding="utf-8")
    log(f"wrote {out / 'grades.csv'} and {out / 'feedback'}/")
    return results


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--worker":
    _worker_main(sys.argv[2])

"""The checks' shared machinery: calling a learner's function, naming the mistake a wrong result matches,
tolerances, and multiple-choice questions (:class:`Question`, :data:`QUESTIONS`, :func:`check_choice`).

Each lesson's module registers its questions in :data:`QUESTIONS`.

**Running and judging apart.** Every check reaches the learner's code through one function, :func:`_call`. That
makes each check two halves of the same code: ``check_x(fn) = judge(run(fn))``. In a learner's notebook both halves
run together, as an ordinary function. When the grader runs a notebook it sets ``HELPERS_CHECK_RECORD``; then each
check (wrapped by :func:`graded`) *records* what the learner's function returned on every case — values, gradients
with respect to the inputs, changes to the inputs, the random state after the call — in a plain JSON file, and the
grader later calls the very same check in its own process with :func:`replay`, where :func:`_call` hands back the
recorded outputs instead of calling anything. The reference values, the comparisons, the named mistakes and the
points are all computed in the grader's process: patching ``torch`` or the checks inside the notebook changes
nothing but the learner's own outputs.
"""
from __future__ import annotations

import builtins
import dataclasses
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Callable

import torch

from .. import RECORD_ENV  # the grader sets it in the notebook's kernel: the JSON-lines file the checks write

ATOL_PROBS = 1e-5
ATOL_VALUE = 1e-4
RTOL_VALUE = 1e-5
ATOL_RATE = 1e-5
Z95 = 1.96  # the 97.5 % normal quantile, as helpers.evaluate uses it; the exact 1.95996... also passes (ATOL_RATE)

NOT_IMPLEMENTED_HELP = "write your code in place of the `raise NotImplementedError` line, run that cell, then this check"


# ----------------------------------------------------------------------------------------------------------------
# shared machinery

def _call(fn: Callable, name: str, *args):
    """Call the learner's function; a stub that still raises NotImplementedError becomes a clear failure.

    While the grader records, what the function did is written down; while it replays, nothing is called and the
    recorded outputs come back (see the module docstring)."""
    if not callable(fn):
        raise AssertionError(f"{name}: expected a function, got {type(fn).__name__} {fn!r}")
    if isinstance(_session, _Replay):
        return _session.next(name, args)
    recording = _session if isinstance(_session, _Recording) else None
    digest = _digest(args) if recording else ""
    rng = torch.get_rng_state() if recording else None
    try:
        out = fn(*args)
    except NotImplementedError as e:
        if recording:
            recording.add(name, digest, args, rng, raised=e)
        what = str(e).strip() or f"{name} is not implemented yet"
        raise AssertionError(f"{what}: {NOT_IMPLEMENTED_HELP}") from None
    except Exception as e:
        if recording:
            recording.add(name, digest, args, rng, raised=e)
        raise
    if recording:
        recording.add(name, digest, args, rng, out=out)
    return out


def _fail(name: str, mistake: str, detail: str = "") -> None:
    raise AssertionError(f"{name}: {mistake}" + (f"\n{detail}" if detail else ""))


def _fmt(x) -> str:
    """A tensor or number, short enough for a message."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to(torch.float64)
        if x.numel() > 8:
            x = x.flatten()[:8]
            return "[" + ", ".join(f"{v:.4g}" for v in x.tolist()) + ", ...]"
        return str([round(v, 5) for v in x.flatten().tolist()]) if x.dim() else f"{float(x):.6g}"
    if isinstance(x, (tuple, list)):
        return "(" + ", ".join(_fmt(v) for v in x) + ")"
    if isinstance(x, float):
        return f"{x:.6g}"
    return repr(x)


def _tensor_result(out, name: str, shape: torch.Size, case: str) -> torch.Tensor:
    """The learner's output as float64, after checking that it is a plain tensor of the right shape."""
    if type(out) is not torch.Tensor:  # exactly a tensor: a subclass could override comparisons
        _fail(name, f"returns a {type(out).__name__}, expected a torch.Tensor", f"case: {case}")
    if out.shape != shape:
        hint = (" (one value per prompt: do not average or sum over prompts)" if out.dim() < len(shape)
                else " (the same shape as the inputs' leading dimensions)")
        _fail(name, f"returns shape {list(out.shape)}, expected {list(shape)}{hint}", f"case: {case}")
    return out.detach().to(torch.float64)


def _close(got: torch.Tensor, want: torch.Tensor, atol: float, rtol: float = 0.0) -> bool:
    return bool(torch.allclose(got, want.to(torch.float64), atol=atol, rtol=rtol, equal_nan=True))


def _first_match(got: torch.Tensor, variants: list[tuple[str, torch.Tensor]], atol: float,
                 rtol: float = 0.0, want: torch.Tensor | None = None) -> str | None:
    """The first known mistake whose result equals the learner's. With ``want``, a result that has nan or inf in
    places is also compared where it is finite, so that a nan from one padded row does not hide a wrong formula
    that shows on the other rows."""
    for mistake, value in variants:
        if value.shape == got.shape and _close(got, value, atol, rtol):
            return mistake
    finite = torch.isfinite(got)
    if want is not None and bool(finite.any()) and not bool(finite.all()) \
            and not _close(got[finite], want[finite], atol, rtol):
        for mistake, value in variants:
            if value.shape == got.shape and _close(got[finite], value[finite], atol, rtol):
                return mistake
    return None


def _inputs_unchanged(name: str, originals: tuple, passed: tuple, case: str) -> None:
    for i, (a, b) in enumerate(zip(originals, passed)):
        if isinstance(a, torch.Tensor) and not torch.equal(a, b):
            _fail(name, f"changes its input (argument {i + 1}) in place: compute a new tensor instead, later cells "
                        f"still need the inputs", f"case: {case}")


@dataclass
class _Case:
    name: str
    args: tuple  # tensors (float32) and beta, in the function's argument order


def _random_case(gen: torch.Generator, shape: tuple, beta: float, pad: int, name: str,
                 with_policy: bool = False) -> _Case:
    """Random reference probabilities (with ``pad`` padded candidates at the end of every row) and rewards,
    preceded by a random policy (0 on the padding too) when ``with_policy``."""
    K = shape[-1]
    logits = torch.randn(shape, generator=gen, dtype=torch.float64)
    mask = torch.ones(shape, dtype=torch.bool)
    if pad:
        mask[..., K - pad:] = False
    ref = torch.softmax(logits.masked_fill(~mask, float("-inf")), -1)
    rewards = (2 * torch.rand(shape, generator=gen, dtype=torch.float64) - 1) * 2
    rewards = torch.where(mask, rewards, torch.full_like(rewards, 1.5))  # padding's reward must not matter
    args = [ref.float(), rewards.float(), beta]
    if with_policy:
        pol = torch.softmax(torch.randn(shape, generator=gen, dtype=torch.float64).masked_fill(~mask, float("-inf")), -1)
        args = [pol.float()] + args
    return _Case(name, tuple(args))


# ----------------------------------------------------------------------------------------------------------------
# conceptual questions: multiple choice, graded by letter, each wrong letter explained

@dataclass(frozen=True)
class Question:
    """A multiple-choice question: one letter per part (most have one part), and why each wrong letter is wrong."""
    title: str
    answer: str                          # the right letter of each part, in order, e.g. "B" or "BA"
    why_not: tuple[dict[str, str], ...]  # per part: wrong letter -> what is wrong with it
    parts: tuple[str, ...] = ("",)       # names of the parts, for messages when there are several
    letters: str = "ABCD"



QUESTIONS: dict[str, Question] = {}  # filled by each lesson's module


def _letters(answer, question: Question) -> str:
    if isinstance(answer, (tuple, list)) and all(type(a) is str for a in answer):
        answer = "".join(answer)
    if type(answer) is not str:
        raise AssertionError(f"{question.title}: answer with a string of letters such as 'B' "
                             f"(got {type(answer).__name__} {answer!r})")
    return "".join(c for c in answer.upper() if c.isalpha())


def check_choice(key: str, answer) -> None:
    """Check a multiple-choice answer: ``answer`` is a function returning letters (or the letters themselves).

    A question with several parts takes one letter per part, in order (e.g. "BA").
    """
    question = QUESTIONS[key]
    if callable(answer):
        answer = _call(answer, question.title)
    given = _letters(answer, question)
    n = len(question.answer)
    if len(given) != n or any(c not in question.letters for c in given):
        what = "one letter" if n == 1 else f"{n} letters, one per part ({', then '.join(question.parts)})"
        raise AssertionError(f"{question.title}: expected {what} from {', '.join(question.letters)}; "
                             f"got {answer!r}")
    wrong = [(i, c) for i, c in enumerate(given) if c != question.answer[i]]
    if wrong:
        reasons = []
        for i, c in wrong:
            part = f" for {question.parts[i]}" if n > 1 else ""
            reasons.append(f"{c}{part} is not the best answer: {question.why_not[i][c]}")
        raise AssertionError(f"{question.title}: " + "\n".join(reasons))
    print(f"{question.title}: correct")


def _first(out, name: str, what: str, case: str):
    """The learner may return the helper's tuple (tensor, extras): keep the first element."""
    if isinstance(out, (tuple, list)):
        if not out:
            _fail(name, f"returns an empty {type(out).__name__}; expected {what}", f"case: {case}")
        return out[0]
    return out


# ----------------------------------------------------------------------------------------------------------------
# the verdict outside the learner's process: record what the learner's function returned, judge it elsewhere

MAX_ELEMENTS = 4_000_000             # per tensor read back from a record: more is not from the course's cases
MAX_JACOBIAN = 100_000               # output elements x input elements: larger outputs keep requires_grad only
_DTYPES = {str(d): d for d in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.uint8, torch.int8,
                              torch.int16, torch.int32, torch.int64, torch.bool)}
ROUNDTRIP_ENV = "HELPERS_CHECK_ROUNDTRIP"  # tests: every check records, then is judged from the record alone
_session = None  # the check being recorded (_Recording) or replayed (_Replay), or None


def graded(check: Callable) -> Callable:
    """``check`` as the notebooks call it: as is, or recorded when the grader has set ``HELPERS_CHECK_RECORD``."""
    @functools.wraps(check)
    def run(*args, **kwargs):
        global _session
        path = os.environ.get(RECORD_ENV)
        if _session is None and os.environ.get(ROUNDTRIP_ENV) and not path:
            return _roundtrip(run, args, kwargs)
        if _session is not None or not path:  # a check called by a check is part of the outer one
            return check(*args, **kwargs)
        _session = recording = _Recording(check.__name__, args, kwargs)
        try:
            return check(*args, **kwargs)
        finally:
            _session = None
            recording.save(path)
    run.check = check
    return run


def replay(check: Callable, record: dict, **kwargs) -> None:
    """Judge a recorded run of ``check`` (in the grader's process): the same check, with the learner's function
    replaced by what it returned. ``kwargs`` are the grader's own (``hidden=True``), never the record's.
    Raises ``AssertionError`` with the check's own message when the outputs are wrong."""
    global _session
    check = getattr(check, "check", check)
    if record.get("check") != check.__name__:
        raise AssertionError(f"{check.__name__}: this check did not run in the notebook")
    args = []
    for a in record.get("args", []):
        args.append(_Learner() if isinstance(a, dict) and a.get("function") is True else _decode(a))
    _session = _Replay(record.get("calls", []))
    try:
        check(*args, **kwargs)
    finally:
        _session = None


def _roundtrip(run: Callable, args: tuple, kwargs: dict) -> None:
    """Record the check, then judge it from the JSON record alone, as the grader does: what the judge says is what
    the check says (tests/test_grading_verdict.py runs every check test this way)."""
    import contextlib
    import io
    import tempfile
    with tempfile.TemporaryDirectory(prefix="check-record-") as tmp:
        path = os.path.join(tmp, "calls.jsonl")
        os.environ[RECORD_ENV] = path
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                run(*args, **kwargs)
        except Exception:
            pass
        finally:
            del os.environ[RECORD_ENV]
        with open(path, encoding="utf-8") as f:
            record = json.loads(f.readlines()[-1])
    replay(run, record, **kwargs)


def record_key(check_name: str, kwargs: dict) -> str:
    """How a recorded check is found again: its name and its keyword arguments."""
    return json.dumps([check_name, {k: kwargs[k] for k in sorted(kwargs)}], default=repr)


class _Learner:
    """Stands for the learner's function while replaying: :func:`_call` never calls it."""
    def __call__(self, *args):
        raise AssertionError("the learner's function is not called while a check is judged")


class _Recording:
    def __init__(self, check: str, args: tuple, kwargs: dict):
        self.record = {"check": check, "key": record_key(check, kwargs), "calls": [],
                       "args": [{"function": True} if callable(a) else _encode(a) for a in args]}

    def add(self, name: str, digest: str, args: tuple, rng_before, out=None, raised: BaseException | None = None):
        call = {"name": name, "digest": digest, "after": [_encode(a, state=True) for a in args]}
        if raised is not None:
            call["raised"] = {"type": type(raised).__name__, "message": str(raised)[:2000],
                              "not_implemented": isinstance(raised, NotImplementedError)}
        else:
            leaves = [t for t in _tensors(args) if t.requires_grad]
            call["out"] = _encode(out, leaves=leaves)
        rng = torch.get_rng_state()
        if not torch.equal(rng, rng_before):
            call["rng"] = rng.tolist()
        self.record["calls"].append(call)

    def save(self, path: str) -> None:
        try:
            line = json.dumps(self.record)
        except (TypeError, ValueError) as e:  # cannot happen for what _encode makes; never break a notebook
            line = json.dumps({"check": self.record["check"], "key": self.record["key"], "error": str(e)})
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


class _Replay:
    def __init__(self, calls: list):
        self.calls = list(calls) if isinstance(calls, list) else []

    def next(self, name: str, args: tuple):
        if not self.calls:
            raise AssertionError(f"{name}: this case did not run in the notebook (it stopped, or the check was "
                                 f"changed there)")
        call = self.calls.pop(0)
        if not isinstance(call, dict) or call.get("name") != name or call.get("digest") != _digest(args):
            raise AssertionError(f"{name}: the notebook ran this check on other inputs than the grader's, so its "
                                 f"outputs cannot be judged")
        after = call.get("after")
        if isinstance(after, list) and len(after) == len(args):
            for target, state in zip(args, after):
                _restore(target, state)
        if isinstance(call.get("rng"), list):
            torch.set_rng_state(torch.tensor(call["rng"], dtype=torch.uint8))
        raised = call.get("raised")
        if isinstance(raised, dict):
            message = str(raised.get("message", ""))
            if raised.get("not_implemented"):
                what = message.strip() or f"{name} is not implemented yet"
                raise AssertionError(f"{what}: {NOT_IMPLEMENTED_HELP}")
            kind = getattr(builtins, str(raised.get("type")), None)
            if isinstance(kind, type) and issubclass(kind, Exception) and not issubclass(kind, (
                    OSError, UnicodeError, SyntaxError, StopIteration)):
                raise kind(message)
            raise RuntimeError(f"{raised.get('type')}: {message}")
        leaves = [t for t in _tensors(args) if t.requires_grad]
        return _decode(call.get("out"), leaves=leaves)


def _tensors(x, depth: int = 0) -> list[torch.Tensor]:
    """The tensors among a call's arguments (directly, or inside tuples and lists), in order."""
    if type(x) is torch.Tensor or isinstance(x, torch.nn.Parameter):
        return [x]
    if isinstance(x, (tuple, list)) and depth < 3:
        return [t for v in x for t in _tensors(v, depth + 1)]
    return []


def _digest(x) -> str:
    """A hash of a call's inputs (values, not identities): the case the grader replays must be the case that ran."""
    h = hashlib.sha256()

    def walk(v, depth):
        if depth > 20:
            h.update(b"deep")
        elif isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{list(t.shape)}".encode())
            h.update(t.flatten().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(v, torch.nn.Module):
            h.update(f"M{type(v).__name__}".encode())
            for key, value in v.state_dict().items():
                h.update(key.encode())
                walk(value, depth + 1)
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            h.update(f"D{type(v).__name__}".encode())
            for f in dataclasses.fields(v):
                h.update(f.name.encode())
                walk(getattr(v, f.name), depth + 1)
        elif isinstance(v, (tuple, list)):
            h.update(f"L{len(v)}".encode())
            for item in v:
                walk(item, depth + 1)
        elif isinstance(v, dict):
            h.update(f"{{{len(v)}".encode())
            for key, value in v.items():
                walk(key, depth + 1)
                walk(value, depth + 1)
        elif v is None or isinstance(v, (bool, int, float, str)):
            h.update(f"{type(v).__name__}:{v!r}".encode())
        else:
            h.update(f"?{type(v).__name__}".encode())

    walk(x, 0)
    return h.hexdigest()


def _encode_tensor(t: torch.Tensor) -> dict:
    t = t.detach().cpu()
    return {"tensor": str(t.dtype), "shape": list(t.shape), "data": t.flatten().tolist()}


def _encode(x, leaves: list | None = None, state: bool = False, depth: int = 0):
    """``x`` as plain JSON: numbers, strings, tagged tensors (values, requires_grad, and for an output the Jacobian
    with respect to each input that requires grad) and containers. With ``state``, an argument as it is after the
    call (a tensor's grad, a module's parameters, gradients and train/eval mode), so the replay can restore it."""
    if depth > 20:
        return {"opaque": type(x).__name__, "repr": "..."}
    if x is None or type(x) in (bool, int, float, str):
        return x
    if type(x) is torch.Tensor and str(x.dtype) in _DTYPES:
        out = _encode_tensor(x)
        out["requires_grad"] = bool(x.requires_grad)
        if state and x.grad is not None:
            out["grad"] = _encode_tensor(x.grad)
        if leaves and x.requires_grad and x.grad_fn is not None:
            out["jacobians"] = _jacobians(x, leaves)
        return out
    if type(x) in (tuple, list):
        return {type(x).__name__: [_encode(v, leaves, state, depth + 1) for v in x]}
    if type(x) is dict:
        return {"dict": [[_encode(k, None, False, depth + 1), _encode(v, leaves, state, depth + 1)]
                         for k, v in x.items()]}
    if state and isinstance(x, torch.nn.Module):
        return {"module": {
            "state": {k: _encode_tensor(v) for k, v in x.state_dict(keep_vars=True).items()},
            "grad": {k: _encode_tensor(p.grad) for k, p in x.named_parameters() if p.grad is not None},
            "requires_grad": {k: bool(p.requires_grad) for k, p in x.named_parameters()},
            "training": [m.training for m in x.modules()]}}
    if state and dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {"fields": {f.name: _encode(getattr(x, f.name), None, True, depth + 1) for f in dataclasses.fields(x)}}
    try:
        text = repr(x)[:300]
    except Exception:
        text = f"<{type(x).__name__}>"
    out = {"opaque": type(x).__name__, "repr": text}
    try:
        out["float"] = float(x)
    except Exception:
        pass
    return out


def _jacobians(out: torch.Tensor, leaves: list) -> list | None:
    """d out / d leaf for each leaf (None where it does not depend on it), as [out elements, leaf elements]."""
    if out.numel() * sum(t.numel() for t in leaves) > MAX_JACOBIAN:
        return None
    rows = [[] for _ in leaves]
    try:
        flat = out.reshape(-1)
        for i in range(flat.numel()):
            grads = torch.autograd.grad(flat[i], leaves, retain_graph=True, allow_unused=True)
            for row, g, leaf in zip(rows, grads, leaves):
                row.append(torch.zeros(leaf.numel(), dtype=torch.float64) if g is None
                           else g.detach().reshape(-1).double())
    except RuntimeError:
        return None
    return [_encode_tensor(torch.stack(row) if row else torch.zeros(0, leaf.numel(), dtype=torch.float64))
            for row, leaf in zip(rows, leaves)]


def _decode_tensor(d) -> torch.Tensor:
    if not isinstance(d, dict) or d.get("tensor") not in _DTYPES:
        raise ValueError("not a recorded tensor")
    shape, data = d.get("shape"), d.get("data")
    if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape) or not isinstance(data, list):
        raise ValueError("a recorded tensor without a valid shape")
    numel = 1
    for n in shape:
        numel *= n
    if numel != len(data) or numel > MAX_ELEMENTS:
        raise ValueError("a recorded tensor whose size does not match its shape")
    return torch.tensor(data, dtype=_DTYPES[d["tensor"]]).reshape(shape)


class _Recorded(torch.autograd.Function):
    """A recorded output: its value exactly as recorded (inf and nan included), its gradient with respect to each
    leaf the recorded Jacobian. Rows the incoming gradient does not touch are left out, so a nan in one output's
    gradient does not spread to the others' (as with the elementwise operations that produced it)."""

    @staticmethod
    def forward(ctx, value, n, *leaves_and_jacobians):
        ctx.jacobians = leaves_and_jacobians[n:]
        ctx.leaves = [(leaf.shape, leaf.dtype) for leaf in leaves_and_jacobians[:n]]
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        flat = grad.reshape(-1).to(ctx.jacobians[0].dtype) if ctx.jacobians else grad.reshape(-1)
        used = flat != 0
        grads = [(flat[used] @ J[used]).reshape(shape).to(dtype) for J, (shape, dtype) in zip(ctx.jacobians,
                                                                                            ctx.leaves)]
        return (None, None, *grads, *(None for _ in ctx.jacobians))


def _decode(d, leaves: list | None = None, depth: int = 0):
    """What :func:`_encode` wrote, back as Python objects (a recorded output with its gradients)."""
    if depth > 20:
        raise ValueError("a record nested too deeply")
    if d is None or type(d) in (bool, int, float, str):
        return d
    if not isinstance(d, dict):
        raise ValueError("not a recorded value")
    if "tensor" in d:
        t = _decode_tensor(d)
        if not d.get("requires_grad"):
            return t
        if t.is_floating_point() and leaves and isinstance(d.get("jacobians"), list) \
                and len(d["jacobians"]) == len(leaves):
            jacobians = []
            for jac, leaf in zip(d["jacobians"], leaves):
                J = _decode_tensor(jac).to(t.dtype)
                if J.shape != (t.numel(), leaf.numel()):
                    raise ValueError("a recorded gradient of the wrong shape")
                jacobians.append(J)
            return _Recorded.apply(t, len(leaves), *leaves, *jacobians)
        return t.requires_grad_(True) if t.is_floating_point() else t
    if "tuple" in d or "list" in d:
        items = [_decode(v, leaves, depth + 1) for v in (d.get("tuple") if "tuple" in d else d.get("list")) or []]
        return tuple(items) if "tuple" in d else items
    if "dict" in d:
        out = {}
        for pair in d["dict"] or []:
            key, value = pair
            out[_decode(key, None, depth + 1)] = _decode(value, leaves, depth + 1)
        return out
    if "opaque" in d:  # an object the checks do not expect: same type name and repr, so the messages are the same
        attrs = {"__repr__": lambda self, text=str(d.get("repr", "")): text}
        if isinstance(d.get("float"), float):
            attrs["__float__"] = lambda self, value=d["float"]: value
        return type(str(d["opaque"])[:100] or "object", (), attrs)()
    raise ValueError("not a recorded value")


def _restore(target, state, depth: int = 0) -> None:
    """Put an argument back into the state the learner's function left it in (in place)."""
    if depth > 20 or state is None:
        return
    if isinstance(target, torch.Tensor) and isinstance(state, dict) and "tensor" in state:
        value = _decode_tensor(state)
        with torch.no_grad():
            if value.shape != target.shape:
                raise AssertionError("the learner's function changed the shape of its input in place")
            target.copy_(value)
        if target.is_leaf and target.is_floating_point():
            target.requires_grad_(bool(state.get("requires_grad")))
        target.grad = _decode_tensor(state["grad"]).to(target.dtype) if "grad" in state else None
    elif isinstance(target, list) and isinstance(state, dict) and isinstance(state.get("list"), list):
        items = state["list"]
        if len(items) != len(target):
            target[:] = _decode(state)
            return
        for i, item in enumerate(items):  # in place where the element is an object the check still holds
            if isinstance(item, dict) and ("fields" in item or "module" in item or (
                    "tensor" in item and isinstance(target[i], torch.Tensor))):
                _restore(target[i], item, depth + 1)
            else:
                target[i] = _decode(item)
    elif isinstance(target, dict) and isinstance(state, dict) and "dict" in state:
        value = _decode(state)
        target.clear()
        target.update(value)
    elif isinstance(target, torch.nn.Module) and isinstance(state, dict) and isinstance(state.get("module"), dict):
        m = state["module"]
        own = target.state_dict(keep_vars=True)
        with torch.no_grad():
            for key, value in (m.get("state") or {}).items():
                if key in own:
                    own[key].copy_(_decode_tensor(value))
        grads, flags = m.get("grad") or {}, m.get("requires_grad") or {}
        for key, p in target.named_parameters():
            p.requires_grad_(bool(flags.get(key, p.requires_grad)))
            p.grad = _decode_tensor(grads[key]).to(p.dtype) if key in grads else None
        training = m.get("training")
        if isinstance(training, list):
            for module, flag in zip(target.modules(), training):
                module.training = bool(flag)
    elif dataclasses.is_dataclass(target) and isinstance(state, dict) and isinstance(state.get("fields"), dict):
        for f in dataclasses.fields(target):
            if f.name in state["fields"]:
                _restore(getattr(target, f.name), state["fields"][f.name], depth + 1)


def _tiny_preference_setup(model_class):
    """A tiny ``model_class`` (one block, 32 wide; seed 0, eval mode) and two batches of 8 clean preference pairs
    (correct answer over insult, answerable training prompts) from the course's collate function: what the training
    loop checks of lessons 02 (a reward model) and 04 (DPO) run the learner's loop and the reference loop on."""
    from ... import world
    from ...checkpoint import default_config
    from ...tokenizer import Tokenizer, collate_preferences
    torch.manual_seed(0)
    model = model_class(dataclasses.replace(default_config(), n_layer=1, n_embd=32, n_head=2))
    model.eval()
    ps = [p for p in world.prompts("train") if p.category == "answerable"][:16]
    pairs = [world.PreferencePair(p.text, world.response(p, "correct"), world.response(p, "insult")) for p in ps]
    tok = Tokenizer()
    batches = [collate_preferences(pairs[i:i + 8], tok, model.cfg.block_size) for i in (0, 8)]
    return model, batches

"""helpers/labeling/: the session state machine, the append-only label file, exports and agreement statistics,
and the ipywidgets view driven through its real buttons (no browser; see test_labeling_browser.py for that).

Click handlers run inside ipywidgets' callback dispatcher, which logs exceptions instead of raising them. So every
click goes through :func:`click`, which re-raises the first error the view recorded, and the ``make_view`` fixture
asserts at teardown that no view recorded one.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from helpers import labeling, world
from helpers.labeling import Item, LabelingSession, LabelingWidget

ROOT = Path(__file__).resolve().parents[1]


def make_items(n: int, split: str = "train") -> list[Item]:
    """``n`` pairs from the world: a good and a bad candidate for each of the first ``n`` prompts."""
    out = []
    for p in world.prompts(split)[:n]:
        cands = world.candidates(p)
        good = world.response(p, world.VERBOSE_BASE[p.category])
        out.append(Item(p.text, good, cands["insult"]))
    return out


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def alice_labeled_the_first(folder: Path, n: int) -> tuple[list[Item], Path]:
    """``n`` items and alice's label file in ``folder``, holding one label: "a" on the first item."""
    items = make_items(n)
    session = LabelingSession(items, folder, "alice")
    session.label("a")
    session.close()
    return items, folder / "alice.jsonl"


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make_view():
    """Build views (min_dwell 0 unless asked), and fail the test if any click handler recorded an exception."""
    views = []

    def make(session: LabelingSession, **kwargs) -> LabelingWidget:
        kwargs.setdefault("min_dwell", 0.0)
        view = LabelingWidget(session, **kwargs)
        views.append(view)
        return view

    yield make
    for view in views:
        assert not view.errors, f"a click handler raised: {view.errors!r}"


def click(view: LabelingWidget, action: str) -> None:
    """Click the view's real button, and raise whatever the handler raised (ipywidgets would only log it)."""
    before = len(view.errors)
    view.buttons[action].click()
    if len(view.errors) > before:
        raise view.errors[before]


# ----------------------------------------------------------------------------------------------------------------
# items, sides, the state machine

def test_item_id_depends_on_the_texts_only():
    a, b = Item("p", "x", "y"), Item("p", "x", "y")
    assert a.id == b.id == labeling.item_id("p", "x", "y")
    assert Item("p", "y", "x").id != a.id and Item("q", "x", "y").id != a.id


def test_session_shows_items_in_order_and_advances_on_each_label(tmp_path):
    items = make_items(4)
    session = LabelingSession(items, tmp_path, "alice")
    assert session.progress == (0, 4)
    seen = []
    for choice in ("a", "b", "tie", "skip"):
        seen.append(session.current.item)
        session.label(choice)
    assert seen == items
    assert session.current is None and session.progress == (4, 4)
    with pytest.raises(RuntimeError, match="all 4 pairs are labeled"):
        session.label("a")
    with pytest.raises(ValueError, match="unknown choice"):
        LabelingSession(items, tmp_path / "other", "bob").label("left")


def test_sides_are_shuffled_by_the_seed_and_recorded(tmp_path):
    items = make_items(200)
    session = LabelingSession(items, tmp_path, "alice", seed=0)
    swaps = [session.swap(item) for item in items]
    assert 70 < sum(swaps) < 130  # a fair coin per item
    assert swaps == [LabelingSession(items, tmp_path / "again", "alice", seed=0).swap(i) for i in items]
    assert swaps != [LabelingSession(items, tmp_path / "seed1", "alice", seed=1).swap(i) for i in items]
    for item, swap in zip(items[:20], swaps):
        shown = session.current
        assert shown.swap == swap
        assert (shown.left, shown.right) == ((item.second, item.first) if swap else (item.first, item.second))
        assert session.label("a").swap == swap
    assert [r["swap"] for r in lines(session.path)] == swaps[:20]


@pytest.mark.parametrize("choice, swap, outcome", [
    ("a", False, "first"), ("a", True, "second"), ("b", False, "second"), ("b", True, "first"),
    ("tie", True, "tie"), ("both_bad", False, "both_bad"), ("skip", True, "skip")])
def test_outcome_turns_a_click_into_item_terms(choice, swap, outcome):
    lab = labeling.Label("id", "ann", choice, swap, "p", "first text", "second text")
    assert lab.outcome == outcome
    if lab.decisive:
        assert (lab.left if choice == "a" else lab.right) == f"{outcome} text"


def test_every_action_is_one_record_with_item_annotator_label_swap_and_time(tmp_path):
    session = LabelingSession(make_items(3), tmp_path, "alice")
    session.label("a", rationale="shorter")
    session.label("both_bad")
    session.undo()
    records = lines(tmp_path / "alice.jsonl")
    assert [r["action"] for r in records] == ["label", "label", "undo"]
    for r in records:
        assert r["annotator"] == "alice" and len(r["item"]) == 16 and r["time"].endswith("+00:00")
    assert records[0]["label"] == "a" and records[0]["rationale"] == "shorter" and isinstance(records[0]["swap"], bool)
    assert records[2]["item"] == records[1]["item"]


def test_undo_withdraws_the_last_label_and_shows_that_pair_again(tmp_path):
    items = make_items(3)
    session = LabelingSession(items, tmp_path, "alice")
    assert session.undo() is None  # nothing to undo: nothing written
    assert not session.path.exists()
    session.label("a")
    session.label("b")
    assert session.undo().item == items[1].id
    assert session.current.item == items[1] and session.progress == (1, 3)
    assert session.undo().item == items[0].id
    assert session.current.item == items[0] and session.progress == (0, 3)
    session.label("tie")
    assert [lab.label for lab in session.labels] == ["tie"]


def test_reopening_resumes_where_the_annotator_stopped(tmp_path):
    items = make_items(5)
    first = LabelingSession(items, tmp_path, "alice")
    for choice in ("a", "b", "skip"):
        first.label(choice)
    first.undo()
    first.close()
    again = LabelingSession(items, tmp_path, "alice")
    assert again.progress == (2, 5)
    assert again.current.item == items[2]
    assert [lab.label for lab in again.labels] == ["a", "b"]
    again.label("tie")
    assert [lab.label for lab in LabelingSession(items, tmp_path, "alice").labels] == ["a", "b", "tie"]


def test_the_record_is_on_disk_before_the_next_pair_shows(tmp_path, monkeypatch, make_view):
    items = make_items(3)
    view = make_view(LabelingSession(items, tmp_path, "alice"))
    shown_at_fsync = []
    real_fsync = os.fsync

    def spying_fsync(fd):
        real_fsync(fd)
        shown_at_fsync.append((view.prompt.value, len((tmp_path / "alice.jsonl").read_text().splitlines())))

    monkeypatch.setattr(labeling.storage.os, "fsync", spying_fsync)
    before = view.prompt.value
    click(view, "a")
    # the file entry of a new file is fsync'd (the folder) and then the record: both while the old pair is shown
    assert shown_at_fsync[-1] == (before, 1)
    assert view.prompt.value != before


# ----------------------------------------------------------------------------------------------------------------
# damaged files, crashes, file names

def test_damaged_lines_are_reported_with_their_line_numbers_and_skipped(tmp_path):
    items = make_items(4)
    session = LabelingSession(items, tmp_path, "alice")
    session.label("a")
    session.label("b")
    session.close()
    path = tmp_path / "alice.jsonl"
    good = path.read_text().splitlines()
    bad_label = json.loads(good[1]) | {"label": "maybe"}
    path.write_text("\n".join([good[0], "{not json", json.dumps(bad_label), "[1, 2]", good[1],
                               json.dumps({"action": "undo", "item": "nope", "annotator": "alice", "time": "t"})])
                    + "\n")
    path.write_bytes(path.read_bytes() + b'\xff\xfe{"v": 1}\n')
    with pytest.warns(labeling.LabelFileWarning) as caught:
        reopened = LabelingSession(items, tmp_path, "alice")
    message = str(caught[0].message)
    assert [d.line for d in reopened.damaged] == [2, 3, 4, 7, 6]
    for number in (2, 3, 4, 6, 7):
        assert f"line {number}:" in message
    assert "unknown label 'maybe'" in message and "undo of an item with no label" in message
    assert reopened.progress == (2, 4)  # both good records survived
    with pytest.warns(labeling.LabelFileWarning):
        assert len(labeling.read_labels(tmp_path).damaged) == 5


def test_a_torn_last_line_is_reported_and_does_not_swallow_the_next_record(tmp_path):
    items = make_items(3)
    session = LabelingSession(items, tmp_path, "alice")
    session.label("a")
    session.close()
    path = tmp_path / "alice.jsonl"
    path.write_bytes(path.read_bytes() + b'{"v": 1, "action": "lab')  # a power cut in the middle of a write
    with pytest.warns(labeling.LabelFileWarning, match="line 2"):
        session = LabelingSession(items, tmp_path, "alice")
    session.label("b")
    with pytest.warns(labeling.LabelFileWarning, match="line 2"):
        assert [lab.label for lab in LabelingSession(items, tmp_path, "alice").labels] == ["a", "b"]


@pytest.mark.parametrize("damage, reason", [
    ('{"action": []}', "unknown action"),
    ('{"action": {"label": 1}}', "unknown action"),
    ('{"action": null}', "unknown action"),
    ('{"action": ' + "1" * 5000 + "}", "not JSON"),
    ('{"action": "undo", "item": "\\ud800", "annotator": "alice", "time": "t"}', "field 'item' is not valid text"),
    ('{"action": "undo", "item": "x", "annotator": ["alice"], "time": "t"}', "field 'annotator' missing"),
    ("[" * 100_000, "nested too deeply"),
    ('{"action": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ('{"action": "label", "rationale": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
])
def test_a_line_of_the_wrong_types_or_nested_without_end_is_reported_and_skipped(tmp_path, damage, reason):
    items, path = alice_labeled_the_first(tmp_path, 3)
    path.write_text(path.read_text() + damage + "\n")
    with pytest.warns(labeling.LabelFileWarning, match=f"line 2: {reason}"):
        reopened = LabelingSession(items, tmp_path, "alice")
    assert [d.line for d in reopened.damaged] == [2] and reopened.progress == (1, 3)
    with pytest.warns(labeling.LabelFileWarning, match=f"line 2: {reason}"):
        merged = labeling.read_labels(tmp_path)
    assert len(merged.labels) == 1 and [d.line for d in merged.damaged] == [2]


@pytest.mark.parametrize("field, value", [("rationale", ["why"]), ("rationale", {"x": 1}), ("source", 3)])
def test_an_optional_field_of_the_wrong_type_is_a_damaged_line(tmp_path, field, value):
    items, path = alice_labeled_the_first(tmp_path, 2)
    record = lines(path)[0] | {field: value}
    path.write_text(json.dumps(record) + "\n")
    with pytest.warns(labeling.LabelFileWarning, match=f"line 1: field {field!r}"):
        assert LabelingSession(items, tmp_path, "alice").progress == (0, 2)


def test_a_record_claiming_another_annotator_is_damaged_in_its_own_session(tmp_path):
    items, path = alice_labeled_the_first(tmp_path, 3)
    forged = lines(path)[0] | {"annotator": "bob", "item": items[1].id}
    path.write_text(path.read_text() + json.dumps(forged) + "\n")
    with pytest.warns(labeling.LabelFileWarning, match="line 2: annotator 'bob' in the file of 'alice'"):
        reopened = LabelingSession(items, tmp_path, "alice")
    assert [d.line for d in reopened.damaged] == [2]
    assert [lab.item for lab in reopened.labels] == [items[0].id] and reopened.progress == (1, 3)
    with pytest.warns(labeling.LabelFileWarning, match="annotator 'bob' in the file of 'alice'"):
        merged = labeling.read_labels(tmp_path)
    assert merged.annotators == ["alice"] and len(merged.labels) == 1


def test_a_file_whose_records_claim_another_annotator_never_replaces_that_annotators_labels(tmp_path):
    items = make_items(6)
    labeling.simulate(LabelingSession(items, tmp_path, "bob"), world.Annotator(seed=1))
    bob = {lab.item: lab.label for lab in labeling.read_labels(tmp_path).labels}
    forged = [r | {"label": "skip"} for r in lines(tmp_path / "bob.jsonl")]  # zed sorts after bob: it would win
    (tmp_path / "zed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in forged))
    with pytest.warns(labeling.LabelFileWarning, match="zed.jsonl line 1: annotator 'bob' in the file of 'zed'"):
        merged = labeling.read_labels(tmp_path)
    assert len(merged.damaged) == 6 and merged.annotators == ["bob"]
    assert {lab.item: lab.label for lab in merged.labels} == bob


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from helpers import labeling, world
    folder, k = sys.argv[1], int(sys.argv[2])
    items = [labeling.Item(p.text, world.response(p, "refusal"), world.response(p, "insult"))
             for p in world.prompts("train") if p.category == "harmful"][:10]
    view = labeling.LabelingWidget(labeling.LabelingSession(items, folder, "crash"), min_dwell=0)
    for i in range(k):
        view.buttons["a" if i % 2 else "b"].click()
        assert not view.errors, view.errors
        print(f"saved {i + 1}", flush=True)  # what the widget's status line says: "saved ..."
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.parametrize("k", [1, 4])
def test_a_kill_9_after_a_click_loses_no_saved_label(tmp_path, k):
    result = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(tmp_path), str(k)], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert result.stdout.split("\n")[-2] == f"saved {k}"
    assert len(lines(tmp_path / "crash.jsonl")) == k
    items = [Item(p.text, world.response(p, "refusal"), world.response(p, "insult"))
             for p in world.prompts("train") if p.category == "harmful"][:10]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no damaged line either
        session = LabelingSession(items, tmp_path, "crash")
    assert session.progress == (k, 10) and session.current.item == items[k]


STREAM_SCRIPT = textwrap.dedent("""
    import sys
    from helpers import labeling, world
    items = [labeling.Item(p.text, world.response(p, "refusal"), world.response(p, "insult"))
             for p in world.prompts("train") if p.category == "harmful"][:200]
    view = labeling.LabelingWidget(labeling.LabelingSession(items, sys.argv[1], "stream"), min_dwell=0)
    for i in range(len(items)):
        view.buttons["a" if i % 2 else "b"].click()
        print(f"saved {i + 1}", flush=True)
""")


def test_a_kill_9_from_outside_in_the_middle_of_labeling_loses_no_reported_label(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", STREAM_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             cwd=ROOT)
    reported = 0
    for line in child.stdout:
        reported = int(line.split()[1])
        if reported >= 15:
            break
    child.kill()  # SIGKILL, at whatever point the child is in its next click
    rest = child.stdout.read().split()  # what it printed before it died, and we had not read yet
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL and reported >= 15
    if rest:
        reported = int(rest[-1])
    records, damaged = labeling.read_log(tmp_path / "stream.jsonl")
    assert not damaged  # one write call per record: no torn line
    # every label reported as saved is on disk; at most one more was written and not yet reported
    assert reported <= len(records) <= reported + 1


@pytest.mark.parametrize("annotator", ["../evil", "a/b", "/etc/passwd", "..", ".hidden", "", "a b", "a\\b",
                                       "x\x00y", "x" * 65, "é"])
def test_annotator_ids_that_could_leave_the_labels_folder_are_rejected(tmp_path, annotator):
    folder = tmp_path / "labels"
    with pytest.raises(ValueError, match="annotator id"):
        LabelingSession(make_items(1), folder, annotator)
    with pytest.raises(ValueError, match="annotator id"):
        labeling.label_path(folder, annotator)
    assert list(tmp_path.rglob("*")) == []


def test_a_plain_annotator_id_names_a_file_inside_the_folder(tmp_path):
    assert labeling.label_path(tmp_path, "alice.smith-2") == tmp_path / "alice.smith-2.jsonl"


# ----------------------------------------------------------------------------------------------------------------
# simulated annotators, merging, export

def test_simulated_annotator_fills_the_same_session(tmp_path):
    items = make_items(30)
    session = LabelingSession(items, tmp_path, "sim")
    assert labeling.simulate(session, world.Annotator(tau=0.01, seed=0), n=10) == 10
    assert session.progress == (10, 30)
    assert labeling.simulate(session, world.Annotator(tau=0.01, seed=0)) == 20
    assert session.current is None
    labels = session.labels
    assert {lab.source for lab in labels} == {"simulated"}
    # a near-noiseless annotator prefers the good response (item.first) every time, whichever side it was on
    assert {lab.outcome for lab in labels} == {"first"}
    assert {lab.label for lab in labels} == {"a", "b"}


def test_both_bad_below_marks_pairs_where_neither_response_is_acceptable(tmp_path):
    p = next(p for p in world.prompts("train") if p.category == "harmful")
    items = [Item(p.text, world.response(p, "harmful"), world.response(p, "insult")), make_items(1)[0]]
    session = LabelingSession(items, tmp_path, "sim")
    labeling.simulate(session, world.Annotator(seed=0), both_bad_below=0.0)
    assert [lab.label for lab in session.labels][0] == "both_bad"
    assert session.labels[1].decisive


def test_several_annotators_files_merge(tmp_path):
    items = make_items(6)
    for name, seed in (("alice", 0), ("bob", 1), ("carol", 2)):
        labeling.simulate(LabelingSession(items, tmp_path, name, seed=seed), world.Annotator(seed=seed), n=4)
    (tmp_path / "notes.txt").write_text("not a label file")
    merged = labeling.read_labels(tmp_path)
    assert merged.annotators == ["alice", "bob", "carol"]
    assert len(merged.labels) == 12 and not merged.damaged
    assert labeling.read_labels(tmp_path / "missing").labels == []


def test_export_gives_preference_pairs_and_counts_what_it_leaves_out(tmp_path):
    items = make_items(6)
    session = LabelingSession(items, tmp_path, "alice")
    for choice in ("a", "b", "tie", "both_bad", "skip", "a"):
        session.label(choice)
    export = labeling.export_pairs(labeling.read_labels(tmp_path))
    assert export.counts == {"pairs": 3, "tie": 1, "both_bad": 1, "skip": 1}
    assert str(export) == "3 preference pairs; left out: 1 ties, 1 'both bad', 1 skips"
    by_item = {lab.item: lab for lab in session.labels}
    decisive = [items[i] for i in (0, 1, 5)]
    for pair, item, choice in zip(export.pairs, decisive, ("a", "b", "a")):
        assert type(pair) is world.PreferencePair
        shown_left = item.second if by_item[item.id].swap else item.first
        shown_right = item.first if by_item[item.id].swap else item.second
        assert (pair.chosen, pair.rejected) == ((shown_left, shown_right) if choice == "a"
                                                else (shown_right, shown_left))
        assert pair.prompt == item.prompt and pair.annotator == "alice" and pair.source == "widget"


def test_exported_pairs_go_straight_into_the_course_collate_function(tmp_path):
    from helpers.tokenizer import Tokenizer, collate_preferences
    session = LabelingSession(make_items(8), tmp_path, "sim")
    labeling.simulate(session, world.Annotator(seed=3))
    pairs = labeling.export_pairs(session.labels).pairs
    batch = collate_preferences(pairs, Tokenizer())
    assert batch.chosen.input_ids.shape[0] == batch.rejected.input_ids.shape[0] == 8


# ----------------------------------------------------------------------------------------------------------------
# agreement, position bias, gold agreement

def test_cohens_kappa_matches_a_hand_computed_example():
    # 50 items: both "yes" 20, A yes / B no 5, A no / B yes 10, both "no" 15.
    # p_o = 35/50 = 0.7; A says yes 25/50, B 30/50: p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5; kappa = 0.2 / 0.5 = 0.4
    x = ["yes"] * 20 + ["yes"] * 5 + ["no"] * 10 + ["no"] * 15
    y = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert labeling.percent_agreement(x, y) == pytest.approx(0.7)
    assert labeling.cohens_kappa(x, y) == pytest.approx(0.4)


def test_cohens_kappa_with_three_labels_and_its_edge_cases():
    # 10 items, agreeing on items 0-2 (first), 4-5 (second) and 8-9 (tie): p_o = 7/10;
    # marginals x: first 4, second 4, tie 2; y: first 5, second 3, tie 2
    # p_e = (4*5 + 4*3 + 2*2) / 100 = 0.36; kappa = (0.7 - 0.36) / 0.64 = 0.53125
    x = ["first"] * 4 + ["second"] * 4 + ["tie"] * 2
    y = ["first", "first", "first", "second", "second", "second", "first", "first", "tie", "tie"]
    assert labeling.percent_agreement(x, y) == pytest.approx(0.7)
    assert labeling.cohens_kappa(x, y) == pytest.approx(0.53125)
    assert labeling.cohens_kappa(x, x) == pytest.approx(1.0)
    assert labeling.cohens_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)
    assert math.isnan(labeling.cohens_kappa(["tie"] * 3, ["tie"] * 3))
    with pytest.raises(ValueError):
        labeling.cohens_kappa(["a"], [])


def test_agreement_compares_what_was_preferred_not_which_side_was_clicked(tmp_path):
    # the good response is first in half the items and second in the others, so "first" and "second" both occur
    items = [Item(i.prompt, i.first, i.second) if k % 2 else Item(i.prompt, i.second, i.first)
             for k, i in enumerate(make_items(40))]
    for name, seed in (("alice", 0), ("bob", 1)):
        labeling.simulate(LabelingSession(items, tmp_path, name, seed=seed), world.Annotator(tau=0.01))
    merged = labeling.read_labels(tmp_path)
    sides = {(lab.annotator, lab.item): lab.swap for lab in merged.labels}
    assert sum(sides[("alice", i.id)] != sides[("bob", i.id)] for i in items) > 10  # they saw different orders
    assert labeling.agreement(merged, "alice", "bob") == {"items": 40, "percent": 1.0, "kappa": 1.0}


def test_agreement_leaves_skips_out_and_uses_item_terms(tmp_path):
    items = make_items(4)
    a = LabelingSession(items, tmp_path, "alice", seed=0)
    b = LabelingSession(items, tmp_path, "bob", seed=0)
    for choice_a, choice_b in (("a", "a"), ("b", "a"), ("tie", "tie"), ("skip", "a")):
        a.label(choice_a)
        b.label(choice_b)
    ag = labeling.agreement(labeling.read_labels(tmp_path), "alice", "bob")
    # same seed, same sides: outcomes equal on items 0 and 2, differ on 1; item 3 skipped by alice
    outcomes_a = [lab.outcome for lab in a.labels[:3]]
    outcomes_b = [lab.outcome for lab in b.labels[:3]]
    assert ag["items"] == 3 and ag["percent"] == pytest.approx(2 / 3)
    assert ag["kappa"] == pytest.approx(labeling.cohens_kappa(outcomes_a, outcomes_b))


def test_position_bias_report_finds_an_annotator_who_prefers_the_left(tmp_path):
    items = make_items(300)
    labeling.simulate(LabelingSession(items, tmp_path, "fair"), world.Annotator(tau=1.0, seed=0))
    labeling.simulate(LabelingSession(items, tmp_path, "lefty"),
                      world.Annotator(tau=1.0, position_bias=3.0, seed=0))
    report = labeling.position_bias(labeling.read_labels(tmp_path))
    fair, lefty = report["fair"], report["lefty"]
    assert fair["decisive"] == lefty["decisive"] == 300
    assert abs(fair["left_rate"] - fair["gold_left_rate"]) < 0.1
    assert lefty["left_rate"] > lefty["gold_left_rate"] + 0.2
    assert lefty["interval"][0] > fair["interval"][0]


def test_gold_agreement_of_a_careful_and_a_careless_annotator(tmp_path):
    items = make_items(200)
    labeling.simulate(LabelingSession(items, tmp_path, "careful"), world.Annotator(tau=0.01, seed=0))
    labeling.simulate(LabelingSession(items, tmp_path, "careless"), world.Annotator(tau=100.0, seed=0))
    gold = labeling.gold_agreement(labeling.read_labels(tmp_path))
    assert gold["careful"] == {"compared": 200, "agreement": 1.0}
    assert 0.35 < gold["careless"]["agreement"] < 0.65


def test_report_names_every_figure(tmp_path):
    items = make_items(20)
    for name, seed in (("alice", 0), ("bob", 1)):
        labeling.simulate(LabelingSession(items, tmp_path, name, seed=seed), world.Annotator(seed=seed))
    text = labeling.report(labeling.read_labels(tmp_path))
    for phrase in ("40 labels from 2 annotator(s)", "40 preference pairs", "agreement alice / bob: 20 shared items",
                   "Cohen's kappa", "position bias alice", "gold agreement bob"):
        assert phrase in text


# ----------------------------------------------------------------------------------------------------------------
# the view, through its real buttons

def test_clicking_the_buttons_labels_undoes_and_shows_progress(tmp_path, make_view):
    items = make_items(3)
    view = make_view(LabelingSession(items, tmp_path, "alice"))
    assert "labeled 0 of 3" in view.header.value and view.buttons["undo"].disabled
    click(view, "a")
    assert "labeled 1 of 3" in view.header.value and not view.buttons["undo"].disabled
    view.rationale.value = "  too rude  "
    click(view, "b")
    assert view.rationale.value == ""
    click(view, "undo")
    assert "labeled 1 of 3" in view.header.value and "shown again" in view.status.value
    click(view, "both_bad")
    click(view, "skip")
    assert "all 3 pairs are labeled" in view.prompt.value
    assert all(view.buttons[a].disabled for a in labeling.CHOICES) and not view.buttons["undo"].disabled
    records = lines(tmp_path / "alice.jsonl")
    assert [r.get("label", r["action"]) for r in records] == ["a", "b", "undo", "both_bad", "skip"]
    assert records[1]["rationale"] == "too rude"


def test_a_second_click_right_after_a_pair_appears_is_ignored(tmp_path, make_view):
    clock = FakeClock()
    view = make_view(LabelingSession(make_items(3), tmp_path, "alice"), min_dwell=0.3, clock=clock)
    clock.now += 2.0
    click(view, "a")
    clock.now += 0.01  # a double click's second half
    click(view, "a")
    assert view.session.progress == (1, 3) and "double click" in view.status.value
    clock.now += 0.5
    click(view, "b")
    assert view.session.progress == (2, 3)


def test_buttons_are_disabled_while_a_click_is_handled(tmp_path, monkeypatch, make_view):
    view = make_view(LabelingSession(make_items(2), tmp_path, "alice"))
    states = []
    real_label = view.session.label

    def spying_label(*args, **kwargs):
        states.append([b.disabled for b in view.buttons.values()])
        view.buttons["b"].click()  # a click that arrives while this one is handled does nothing
        return real_label(*args, **kwargs)

    monkeypatch.setattr(view.session, "label", spying_label)
    click(view, "a")
    assert states == [[True] * len(view.buttons)]
    assert view.session.progress == (1, 2)


def test_keys_box_labels_and_undoes(tmp_path, make_view):
    view = make_view(LabelingSession(make_items(4), tmp_path, "alice"))
    for key in ("a", "T", "u", "x"):
        view.keys.value = key
        assert view.keys.value == ""
    view.keys.value = "ab"  # typed before the box was cleared: ignored, not two labels
    view.keys.value = "q"
    assert "keys:" in view.status.value
    assert [lab.label for lab in view.session.labels] == ["a", "both_bad"]


def test_hostile_text_is_escaped_in_every_box(tmp_path, make_view):
    hostile = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "</div><b>x</b> $x^2$ & 'q' \"q\""]
    view = make_view(LabelingSession([Item(*hostile)], tmp_path, "alice"))
    html_shown = view.prompt.value + view.left.value + view.right.value
    for text in hostile:
        assert text not in html_shown
    for tag in ("<script", "<img", "<b>", "</div><b>"):
        assert tag not in html_shown
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in view.prompt.value
    assert "&lt;img src=x onerror=alert(1)&gt;" in html_shown


def test_an_exception_in_a_click_handler_is_shown_and_recorded(tmp_path, monkeypatch):
    view = LabelingWidget(LabelingSession(make_items(2), tmp_path, "alice"), min_dwell=0)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(view.session, "label", broken)
    with pytest.raises(OSError, match="disk full"):
        click(view, "a")
    assert "OSError: disk full" in view.status.value
    assert not view.buttons["a"].disabled  # the pair is still there to label again
    with pytest.raises(OSError, match="disk full"):
        view.simulate(world.Annotator(seed=0))


def test_view_simulate_clicks_through_the_same_path(tmp_path, make_view):
    view = make_view(LabelingSession(make_items(5), tmp_path, "sim"), min_dwell=10.0)
    assert view.simulate(world.Annotator(seed=0), n=3) == 3
    assert "labeled 3 of 5" in view.header.value
    assert {r["source"] for r in lines(tmp_path / "sim.jsonl")} == {"simulated"}


def test_view_simulate_sends_each_widget_once_not_an_update_per_label(tmp_path, monkeypatch):
    """Lesson 02 (section 8) simulates hundreds of labels through the view: one message per changed widget value
    and label would exceed JupyterLab's IOPub limit (1,000 messages/s) and lose the cell's output."""
    import ipywidgets
    sent = []
    monkeypatch.setattr(ipywidgets.Widget, "_send", lambda self, msg, buffers=None: sent.append((self, msg)))
    view = LabelingWidget(LabelingSession(make_items(40), tmp_path, "sim", seed=0))
    sent.clear()
    assert view.simulate(world.Annotator(seed=0)) == 40
    shown, todo = [], [view.box]  # every widget in the view
    while todo:
        shown.append(todo.pop())
        todo.extend(getattr(shown[-1], "children", ()))
    assert 0 < len(sent) <= len(shown)
    assert len({id(widget) for widget, _ in sent}) == len(sent)  # one message per widget
    assert all(msg["method"] == "update" for _, msg in sent)
    assert "labeled 40 of 40" in view.header.value


def test_bench_labeling_reports_the_time_for_200_pairs():
    from helpers.bench.labeling import bench_labeling
    figures = bench_labeling()["labeling"]
    assert 0 < figures["seconds_200_pairs"] < 60


def test_make_items_pairs_two_seeded_samples_of_the_reference_and_drops_identical_ones():
    import helpers
    from helpers.evaluate import sample_responses
    reference = helpers.load_reference()
    prompts = list(world.prompts("train")[::60])
    items = labeling.make_items(reference, prompts, seeds=(1, 2))
    first = sample_responses(reference, prompts, 1.0, 1).texts
    second = sample_responses(reference, prompts, 1.0, 2).texts
    expected = [(p.text, a, b) for p, a, b in zip(prompts, first, second) if a != b]
    assert [(i.prompt, i.first, i.second) for i in items] == expected
    assert 0 < len(items) <= len(prompts)

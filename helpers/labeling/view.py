"""The labeling widget: a thin ipywidgets view over a :class:`LabelingSession`. Text is always shown escaped
(``html.escape`` into an ``HTML`` widget, never a ``Label``, which would typeset ``$...$`` as maths), so a response
is text, never markup or script. ipywidgets is imported only here."""
from __future__ import annotations

import contextlib
import html
import time

from .. import world
from .session import LabelingSession, simulated_choice

# ----------------------------------------------------------------------------------------------------------------
# the view

KEYS = {"a": "a", "b": "b", "t": "tie", "x": "both_bad", "s": "skip", "u": "undo"}
BUTTONS = {"a": "A better", "b": "B better", "tie": "Tie", "both_bad": "Both bad", "skip": "Skip", "undo": "Undo"}


def _text_box(title: str, text: str) -> str:
    """HTML for a titled box showing ``text`` as text: everything the world or a model wrote goes through
    html.escape, so "<script>" shows as the characters "<script>"."""
    return (f"<div style='border:1px solid #ccc;border-radius:4px;padding:6px 8px;min-height:3em'>"
            f"<div style='font-size:85%;color:#666'>{html.escape(title)}</div>"
            f"<div style='white-space:pre-wrap;overflow-wrap:anywhere'>{html.escape(text)}</div></div>")


class LabelingWidget:
    """A thin ipywidgets view over a :class:`LabelingSession`: the prompt, response A (left) and B (right),
    buttons A better / B better / Tie / Both bad / Skip / Undo, an optional rationale, progress, and a status line.

    Keyboard: the shortcuts live in the widget's own "keys" box. Click into it, then type a, b, t (tie),
    x (both bad), s (skip) or u (undo). While focus is in that text box, JupyterLab's command-mode keys (a and b
    insert cells, d d deletes one, ...) are not active, so the two never fight; outside the box a key press is
    JupyterLab's as usual. Buttons get no key bindings of their own, because a focused button leaves JupyterLab
    in command mode, where "a" would insert a cell instead of labeling. (Tab to a button and Space or Enter
    clicks it, as on any web page.)

    Double clicks: the buttons are disabled while a click is handled, but the kernel may receive a second click
    that the browser sent before it learned of that. So an action that arrives less than ``min_dwell`` seconds
    after its pair appeared is ignored (and said so in the status line): nobody reads and judges a pair that fast.

    Errors in a handler do not vanish (ipywidgets would only log them): they are shown in the status line and
    kept in :attr:`errors`, which tests assert empty.
    """

    def __init__(self, session: LabelingSession, min_dwell: float = 0.3, clock=time.monotonic):
        import ipywidgets as widgets  # only the view needs ipywidgets
        self.session, self.min_dwell, self.clock = session, min_dwell, clock
        self.errors: list[Exception] = []
        self._busy = False
        self._resetting_keys = False
        self.header = widgets.HTML()
        self.prompt = widgets.HTML()
        self.left = widgets.HTML(layout=widgets.Layout(width="50%"))
        self.right = widgets.HTML(layout=widgets.Layout(width="50%"))
        self.buttons = {}
        for action, text in BUTTONS.items():
            key = next(k for k, v in KEYS.items() if v == action)
            button = widgets.Button(description=text, tooltip=f"key {key} in the keys box",
                                    button_style="info" if action in ("a", "b") else "",
                                    layout=widgets.Layout(width="auto"))
            button.add_class(f"labeling-{action}")
            button.on_click(lambda _button, action=action: self._act(action))
            self.buttons[action] = button
        self.rationale = widgets.Text(placeholder="optional: why? (saved with the label)",
                                      layout=widgets.Layout(width="60%"))
        self.keys = widgets.Text(placeholder="keys: click here, then a b t x s u", continuous_update=True,
                                 layout=widgets.Layout(width="40%"))
        self.keys.add_class("labeling-keys")
        self.keys.observe(self._on_key, names="value")
        self.status = widgets.HTML()
        for name in ("header", "prompt", "left", "right", "rationale", "status"):
            getattr(self, name).add_class(f"labeling-{name}")
        self.box = widgets.VBox([self.header, self.prompt, widgets.HBox([self.left, self.right]),
                                 widgets.HBox(list(self.buttons.values())),
                                 widgets.HBox([self.rationale, self.keys]), self.status])
        self.box.add_class("labeling-widget")
        self._render()

    def _repr_mimebundle_(self, **kwargs):
        return self.box._repr_mimebundle_(**kwargs)

    def _say(self, message: str, colour: str = "#444") -> None:
        self.status.value = f"<span style='color:{colour}'>{html.escape(message)}</span>"

    def _render(self) -> None:
        """Show the session's current pair and progress; enable what can be clicked now."""
        shown = self.session.current
        done, total = self.session.progress
        self.header.value = (f"<b>annotator</b> {html.escape(self.session.annotator)} &middot; "
                             f"<b class='labeling-progress'>labeled {done} of {total}</b> &middot; "
                             f"saved to {html.escape(str(self.session.path))}")
        if shown is None:
            self.prompt.value = _text_box("prompt", f"all {total} pairs are labeled: thank you")
            self.left.value = self.right.value = ""
        else:
            self.prompt.value = _text_box(f"prompt (pair {shown.index + 1} of {total})", shown.item.prompt)
            self.left.value = _text_box("A", shown.left)
            self.right.value = _text_box("B", shown.right)
        for action, button in self.buttons.items():
            button.disabled = not self.session.labels if action == "undo" else shown is None
        self._shown_at = self.clock()

    def _act(self, action: str, source: str = "widget", force: bool = False) -> None:
        """Handle one button click or key: label (or undo), save, then show the next pair."""
        if self._busy:
            return
        waited = self.clock() - self._shown_at
        if not force and waited < self.min_dwell:
            self._say(f"ignored '{BUTTONS[action]}': it came {waited:.2f} s after the pair appeared "
                      f"(a double click?)", "#b35900")
            return
        self._busy = True
        for button in self.buttons.values():
            button.disabled = True
        try:
            if action == "undo":
                lab = self.session.undo()
                message = "nothing to undo" if lab is None else "undone: that pair is shown again"
            else:
                lab = self.session.label(action, rationale=self.rationale.value.strip(), source=source)
                self.rationale.value = ""
                message = f"saved '{BUTTONS[action]}' to {self.session.path.name}"
            self._render()  # the next pair shows only after the record is on disk
            self._say(message)
        except Exception as e:  # shown and kept, never swallowed
            self.errors.append(e)
            self._render()
            self._say(f"error: {type(e).__name__}: {e}", "#b2182b")
        finally:
            self._busy = False

    def _on_key(self, change) -> None:
        text = change["new"]
        if self._resetting_keys or not text:
            return
        self._resetting_keys = True
        self.keys.value = ""
        self._resetting_keys = False
        action = KEYS.get(text.lower()) if len(text) == 1 else None
        if action is None:
            self._say("keys: a (A better), b (B better), t (tie), x (both bad), s (skip), u (undo)")
            return
        self._act(action)

    def simulate(self, annotator: world.Annotator, n: int | None = None,
                 both_bad_below: float | None = None) -> int:
        """Let ``annotator`` click through up to ``n`` pairs of this view (same path as a click, no dwell wait).

        The view is sent to the browser once, at the end, not after every label: each label changes about 15
        widget values, one IOPub message each, so a hundred pairs in a second would exceed JupyterLab's IOPub
        rate limit (1,000 messages/s), and the server would drop the cell's output ("IOPub message rate
        exceeded")."""
        done, errors = 0, len(self.errors)
        with contextlib.ExitStack() as held:
            for part in self._parts():
                held.enter_context(part.hold_sync())  # on leaving, each part sends its latest state, once
            while self.session.current is not None and (n is None or done < n):
                self._act(simulated_choice(annotator, self.session.current, both_bad_below), "simulated",
                          force=True)
                if len(self.errors) > errors:
                    raise self.errors[-1]
                done += 1
        return done

    def _parts(self) -> list:
        """Every widget whose value a click can change."""
        return [self.header, self.prompt, self.left, self.right, *self.buttons.values(), self.rationale,
                self.keys, self.status]

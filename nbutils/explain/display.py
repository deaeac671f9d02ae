"""Attributions on the page: notebook 04's prediction box and examples, the report's
misclassified examples. Every view is HTML (coloured characters) that also stands as a static
output when the notebook runs headless."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from nbutils.explain.attributions import Attribution, explain, to_html

LEGEND = ('<div style="font-size:0.8em;color:#555;margin-bottom:4px">'
          '<span style="background:rgba(220,50,47,0.6)">red</span>: raises the predicted class\'s '
          'probability; <span style="background:rgba(38,139,210,0.6)">blue</span>: lowers it '
          '(hover a character for its score)</div>')


def attributions_html(attributions: Sequence[Attribution], *, max_chars: int | None = None) -> str:
    """One block per text: the coloured characters, the class, its confidence and the runner-up."""
    blocks = [f'<div style="margin:6px 0">{to_html(a, max_chars=max_chars)}</div>' for a in attributions]
    return "".join(blocks) + LEGEND


def show_examples(texts: Sequence[str], model_dir: str | Path, *, device: str = "auto",
                  max_chars: int = 80, n_steps: int = 32) -> list[Attribution]:
    """Notebook 04: the example texts, each character coloured by integrated gradients."""
    from IPython.display import HTML, display

    from nbutils.explain import is_multi_label
    from nbutils.inference.predict import load_predictor

    if is_multi_label(load_predictor(str(Path(model_dir).resolve()), device, "torch")):
        print("character attributions are not yet for multi-label models (docs/explain.md)")
        return []
    shown = [t for t in texts if t.strip()]  # an empty text has nothing to colour
    attributions = explain(shown, model_dir, device=device, n_steps=n_steps)
    display(HTML(attributions_html(attributions, max_chars=max_chars)))
    return attributions


def explain_box(model_dir: str | Path, *, device: str = "auto", n_steps: int = 32):
    """A text box that classifies what is typed into it (on Enter) and colours its characters by
    how much each raised the predicted class's (calibrated) probability (JupyterLab). A
    multi-label model gets the plain box (``nbutils.inference.predict.classify_box``): its
    attributions are not yet supported."""
    import ipywidgets as widgets
    from IPython.display import HTML

    from nbutils.explain import is_multi_label
    from nbutils.inference.predict import classify_box, load_predictor

    if is_multi_label(load_predictor(str(Path(model_dir).resolve()), device, "torch")):
        return classify_box(model_dir, device=device)

    box = widgets.Text(placeholder="输入新闻标题，回车分类", continuous_update=False,  # classify on Enter
                       layout=widgets.Layout(width="60%"))
    out = widgets.Output()

    def classify(change):
        out.outputs = ()
        if box.value.strip():
            out.append_display_data(HTML(attributions_html(explain([box.value], model_dir, device=device,
                                                                   n_steps=n_steps))))

    box.observe(classify, names="value")
    return widgets.VBox([box, out])


def misclassified_html(texts: Sequence[str], true_labels: Sequence[str], model_dir: str | Path, *,
                       max_chars: int | None = None, n_steps: int = 32) -> str:
    """The report's error analysis: each misclassified text coloured for the class the model
    chose, with its true class and the runner-up."""
    attributions = explain(list(texts), model_dir, n_steps=n_steps)
    blocks = []
    for a, true in zip(attributions, true_labels, strict=True):
        note = "" if a.label != true else " (correct with this model folder: it differs from the run's)"
        blocks.append(f'<div style="margin:8px 0"><div style="font-size:0.85em">true class '
                      f'<b>{html.escape(str(true))}</b>{note}</div>{to_html(a, max_chars=max_chars)}</div>')
    return "".join(blocks) + LEGEND


__all__ = ["attributions_html", "explain_box", "misclassified_html", "show_examples"]

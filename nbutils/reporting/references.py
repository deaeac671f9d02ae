"""Published accuracy numbers for THUCNews, each tied to its exact dataset, split and source.

THUCNews circulates in several incompatible forms, and numbers from one are routinely quoted
next to another. The two public splits used here differ in task difficulty:

- the *title* split (one headline per example; 180k train / 10k dev / 10k test, 10 classes:
  finance, realty, stocks, education, science, society, politics, sports, game, entertainment);
- the *cnews* long-article split (whole articles; 50k train / 5k val / 10k test, 10 classes:
  体育 财经 房产 家居 教育 科技 时尚 时政 游戏 娱乐; a different class set).

A number is only comparable with a run on the same dataset *and* split; ``comparable_to``
picks those rows. Validation-split numbers are kept (people quote them) but flagged as such.
Every source was read at the commit named in its citation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

TITLES = "THUCNews titles"
CNEWS = "THUCNews cnews (long articles)"


@dataclass(frozen=True)
class Reference:
    """One published number and exactly what it was measured on."""

    model: str
    dataset: str  # TITLES or CNEWS
    split: str  # the split the number is measured on, with its size
    train_size: int  # examples the model was trained on
    accuracy: float  # as a fraction, e.g. 0.9483
    source: str  # repository (or paper) and file where the number is published
    note: str = ""

    @property
    def is_test_split(self) -> bool:
        return self.split.startswith("test")


_BERT_REPO = (
    "github.com/649453932/Bert-Chinese-Text-Classification-Pytorch, README.md "
    "(section 效果; commit 76e585c)"
)
_CLASSIC_REPO = (
    "github.com/649453932/Chinese-Text-Classification-Pytorch, README.md "
    "(section 效果; commit dd1e59b)"
)
_WWM_REPO = (
    "github.com/ymcui/Chinese-BERT-wwm, README.md (篇章级文本分类：THUCNews; commit 03c4cd0; its "
    "data/thucnews points to gaussic/text-classification-cnn-rnn's cnews split); "
    "Cui et al. 2019, arXiv:1906.08101"
)
_PYBERT_REPO = (
    "github.com/lonePatient/BERT-chinese-text-classification-pytorch, README.md (classify_report; "
    "commit 11f2c20) "
    "and pybert/config/basic_config.py at commit 1dcdf3d (valid_size 0.3 of cnews.train.txt)"
)

REFERENCES: tuple[Reference, ...] = (
    Reference("bert-base-chinese (BERT + fc)", TITLES, "test (10,000)", 180_000, 0.9483, _BERT_REPO),
    Reference("ERNIE 1.0", TITLES, "test (10,000)", 180_000, 0.9461, _BERT_REPO),
    Reference("FastText (bow + bigram + trigram)", TITLES, "test (10,000)", 180_000, 0.9223,
              _CLASSIC_REPO),
    Reference("TextCNN", TITLES, "test (10,000)", 180_000, 0.9122, _CLASSIC_REPO),
    Reference("BERT (Google Chinese base)", CNEWS, "test (10,000)", 50_000, 0.978, _WWM_REPO,
              note="best of several runs; the average is 97.6%"),
    Reference("TextCNN (character CNN)", CNEWS, "test (10,000)", 50_000, 0.9667,
              "github.com/gaussic/text-classification-cnn-rnn, README.md (训练与验证; commit 091be8b)"),
    Reference("bert-base-chinese (pybert)", CNEWS, "validation (15,000: 30% of cnews.train.txt)",
              35_000, 0.98, _PYBERT_REPO,
              note="a validation split of the training file, not the cnews test set; "
                   "the README rounds to two digits (val_acc 0.9799)"),
)


def references_table(dataset: str | None = None):
    """The references as a DataFrame (accuracy in %), optionally only one dataset's rows."""
    import pandas as pd

    rows = [
        {**asdict(r), "accuracy_pct": round(100 * r.accuracy, 2)}
        for r in REFERENCES
        if dataset is None or r.dataset == dataset
    ]
    frame = pd.DataFrame(rows).drop(columns="accuracy")
    return frame[["dataset", "split", "model", "accuracy_pct", "train_size", "source", "note"]]


def dataset_of(data_format: str, label_names=None) -> str | None:
    """Which published dataset a run used, from its format and labels; None if neither.

    The titles mirror and the public title split share class names; the cnews split has its
    own Chinese class names. Anything else (a user's CSV, a corpus split here) matches none.
    """
    names = set(label_names or ())
    title_classes = {"finance", "realty", "stocks", "education", "science", "society",
                     "politics", "sports", "game", "entertainment"}
    cnews_classes = {"体育", "财经", "房产", "家居", "教育", "科技", "时尚", "时政", "游戏", "娱乐"}
    if data_format == "titles" or (names and names == title_classes):
        return TITLES
    if data_format == "cnews" or (names and names == cnews_classes):
        return CNEWS
    return None


def comparable_to(dataset: str | None):
    """Only the rows measured on the same dataset's *test* split (empty if none)."""
    table = references_table(dataset) if dataset else references_table().iloc[:0]
    return table[table["split"].str.startswith("test")]

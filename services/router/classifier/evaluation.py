"""How good the classifier is: held-out split, cross-validation, calibration, the wild set.

Everything is deterministic (fixed seeds), so the same corpus prints the same figures.

- **Held-out split**: 20 % of the corpus, stratified by domain, seed :data:`SPLIT_SEED`; the
  model is fitted on the other 80 %.
- **Cross-validation**: stratified k-fold over the whole corpus (same seed), domain and tier
  accuracy per fold.
- **Calibration**: a reliability table (confidence bins → accuracy) and the expected
  calibration error (the bin-size-weighted mean gap between confidence and accuracy).
- **Triage threshold**: for each candidate threshold, the share of jobs let through and their
  accuracy. The recommended one is the lowest confidence from which the model is right at
  least :data:`MIN_BIN_ACCURACY` of the time in every reliability bin above: below it, the
  model is wrong about as often as not, and an operator's minute is worth more than a job
  sent to the wrong team and bounced.
- **Wild set**: the model fitted on the whole corpus, scored on texts it never saw and that
  were phrased unlike the corpus: the honest proxy for real traffic.
- **Baseline**: the rule-based lexicon classifier on the same held-out and wild texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from services.router.classifier.corpus import Example
from services.router.classifier.model import SEED, LinearTextModel
from services.router.classifier.store import train
from services.router.domain.classifier import LexiconClassifier
from services.router.domain.taxonomy import Domain, tier_of

# Seed of the held-out split and the folds: fixed so that figures can be compared run to run.
SPLIT_SEED = SEED
# A fifth held out: about 20 texts per domain, enough to see a domain's recall move.
TEST_FRACTION = 0.2
# Ten equal-width confidence bins: the usual reliability diagram resolution.
CALIBRATION_BINS = 10
# A confidence band is worth routing automatically when the model is right at least two times
# in three there; below, most of what it routes would bounce between teams.
MIN_BIN_ACCURACY = 2 / 3
# Thresholds the report tabulates (the settings accept any value in [0, 1]).
CANDIDATE_THRESHOLDS = (0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class Scores:
    """A model's predictions over a list of examples."""

    truth: list[Domain]
    predicted: list[Domain]
    confidence: list[float]

    @property
    def domain_accuracy(self) -> float:
        return _mean([t == p for t, p in zip(self.truth, self.predicted, strict=True)])

    @property
    def tier_accuracy(self) -> float:
        pairs = zip(self.truth, self.predicted, strict=True)
        return _mean([tier_of(t) == tier_of(p) for t, p in pairs])


@dataclass
class Report:
    held_out: Scores
    macro_f1: float
    recall: dict[Domain, float]
    confusion: list[list[int]]
    reliability: list[tuple[float, float, int, float, float]]
    ece: float
    thresholds: list[tuple[float, float, float]]
    recommended_threshold: float | None
    wild: Scores | None
    folds: list[tuple[float, float]] = field(default_factory=list)
    lexicon_held_out: Scores | None = None
    lexicon_wild: Scores | None = None


def _mean(values: Sequence[bool | float]) -> float:
    return float(np.mean(np.asarray(values, dtype=np.float64))) if values else 0.0


def split(examples: Sequence[Example]) -> tuple[list[Example], list[Example]]:
    """The stratified held-out split: (train, test)."""
    from sklearn.model_selection import train_test_split

    train_part, test_part = train_test_split(
        list(examples),
        test_size=TEST_FRACTION,
        random_state=SPLIT_SEED,
        stratify=[example.domain.value for example in examples],
    )
    return list(train_part), list(test_part)


def score(model: LinearTextModel, examples: Sequence[Example]) -> Scores:
    predicted: list[Domain] = []
    confidence: list[float] = []
    for example in examples:
        probabilities = model.score(example.text).probabilities
        best = int(np.argmax(probabilities))
        predicted.append(model.classes[best])
        confidence.append(float(probabilities[best]))
    return Scores([e.domain for e in examples], predicted, confidence)


def score_lexicon(examples: Sequence[Example]) -> Scores:
    lexicon = LexiconClassifier()
    results = [lexicon.classify(title="", description=e.text, service_hint=None) for e in examples]
    return Scores(
        [e.domain for e in examples], [r.domain for r in results], [r.confidence for r in results]
    )


def reliability(scores: Scores) -> tuple[list[tuple[float, float, int, float, float]], float]:
    """(bin low, bin high, count, mean confidence, accuracy) per non-empty bin, and the ECE."""
    rows: list[tuple[float, float, int, float, float]] = []
    total = len(scores.truth)
    ece = 0.0
    correct = [t == p for t, p in zip(scores.truth, scores.predicted, strict=True)]
    for index in range(CALIBRATION_BINS):
        low, high = index / CALIBRATION_BINS, (index + 1) / CALIBRATION_BINS
        members = [
            i
            for i, c in enumerate(scores.confidence)
            if low <= c < high or (index == CALIBRATION_BINS - 1 and c == 1.0)
        ]
        if not members:
            continue
        confidence = _mean([scores.confidence[i] for i in members])
        accuracy = _mean([correct[i] for i in members])
        rows.append((low, high, len(members), confidence, accuracy))
        ece += len(members) / total * abs(confidence - accuracy)
    return rows, ece


def threshold_table(scores: Scores) -> tuple[list[tuple[float, float, float]], float | None]:
    """(threshold, share let through, accuracy of those) and the recommended threshold."""
    rows: list[tuple[float, float, float]] = []
    for threshold in CANDIDATE_THRESHOLDS:
        kept = [i for i, c in enumerate(scores.confidence) if c >= threshold]
        accuracy = _mean([scores.truth[i] == scores.predicted[i] for i in kept])
        rows.append((threshold, len(kept) / len(scores.confidence), accuracy))
    bins, _ = reliability(scores)
    recommended: float | None = None
    # Walk down from the most confident bin while every bin stays good enough.
    for low, _high, _count, _confidence, accuracy in reversed(bins):
        if accuracy < MIN_BIN_ACCURACY:
            break
        recommended = low
    return rows, recommended


def cross_validate(examples: Sequence[Example], folds: int) -> list[tuple[float, float]]:
    """(domain accuracy, tier accuracy) of each stratified fold."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=SPLIT_SEED)
    labels = [example.domain.value for example in examples]
    results: list[tuple[float, float]] = []
    for train_index, test_index in splitter.split(np.zeros(len(labels)), labels):
        model = train([examples[i] for i in train_index])
        fold = score(model, [examples[i] for i in test_index])
        results.append((fold.domain_accuracy, fold.tier_accuracy))
    return results


def evaluate(
    examples: Sequence[Example], *, wild: Sequence[Example] = (), folds: int = 5
) -> Report:
    """The full evaluation of the corpus (and the wild set, if given)."""
    from sklearn.metrics import confusion_matrix, f1_score, recall_score

    train_part, test_part = split(examples)
    held_out = score(train(train_part), test_part)
    labels = [domain.value for domain in Domain]
    truth = [d.value for d in held_out.truth]
    predicted = [d.value for d in held_out.predicted]
    recalls = recall_score(truth, predicted, labels=labels, average=None, zero_division=0)
    rows, ece = reliability(held_out)
    thresholds, recommended = threshold_table(held_out)
    report = Report(
        held_out=held_out,
        macro_f1=float(f1_score(truth, predicted, labels=labels, average="macro", zero_division=0)),
        recall={domain: float(r) for domain, r in zip(Domain, recalls, strict=True)},
        confusion=confusion_matrix(truth, predicted, labels=labels).tolist(),
        reliability=rows,
        ece=ece,
        thresholds=thresholds,
        recommended_threshold=recommended,
        wild=score(train(examples), wild) if wild else None,
        lexicon_held_out=score_lexicon(test_part),
        lexicon_wild=score_lexicon(wild) if wild else None,
    )
    if folds >= 2:
        report.folds = cross_validate(examples, folds)
    return report


# Short column heads for the confusion matrix: the domains' initials are ambiguous.
_SHORT = {
    Domain.RESEARCH: "res",
    Domain.CLINICAL: "cli",
    Domain.PHARMACEUTICAL: "pha",
    Domain.BANKING: "ban",
    Domain.LEGAL: "leg",
    Domain.SALES: "sal",
    Domain.MARKETING: "mkt",
    Domain.DESIGN: "des",
    Domain.ANIMATION: "ani",
    Domain.DATABASE_DEVELOPMENT: "dbd",
    Domain.WRITING: "wri",
    Domain.CONTENT_DEVELOPMENT: "con",
    Domain.DATA_ENTRY: "den",
    Domain.DATA_PROCESSING: "dpr",
    Domain.BOOKKEEPING: "boo",
    Domain.TECHNICAL_SUPPORT: "tec",
    Domain.CUSTOMER_SUPPORT: "cus",
}


def format_report(report: Report, *, corpus_size: int, wild_size: int) -> str:
    """The report as plain text (what ``taskroute classifier evaluate`` prints)."""
    held = report.held_out
    lines = [
        f"corpus: {corpus_size} examples; held-out split: {len(held.truth)}"
        f" ({TEST_FRACTION:.0%}, stratified, seed {SPLIT_SEED})",
        "",
        "held-out split",
        f"  tier accuracy     {held.tier_accuracy:.3f}",
        f"  domain accuracy   {held.domain_accuracy:.3f}",
        f"  macro-F1          {report.macro_f1:.3f}",
    ]
    if report.lexicon_held_out is not None:
        lex = report.lexicon_held_out
        lines.append(
            f"  (lexicon baseline: tier {lex.tier_accuracy:.3f}, domain {lex.domain_accuracy:.3f})"
        )
    if report.folds:
        domain_acc = [d for d, _ in report.folds]
        tier_acc = [t for _, t in report.folds]
        lines += [
            "",
            f"{len(report.folds)}-fold cross-validation (stratified, seed {SPLIT_SEED})",
            f"  domain accuracy   {np.mean(domain_acc):.3f} ± {np.std(domain_acc):.3f}",
            f"  tier accuracy     {np.mean(tier_acc):.3f} ± {np.std(tier_acc):.3f}",
        ]
    if report.wild is not None:
        lines += [
            "",
            f"wild set ({wild_size} texts never trained on; model fitted on the whole corpus)",
            f"  tier accuracy     {report.wild.tier_accuracy:.3f}",
            f"  domain accuracy   {report.wild.domain_accuracy:.3f}",
        ]
        if report.lexicon_wild is not None:
            lex = report.lexicon_wild
            lines.append(
                f"  (lexicon baseline: tier {lex.tier_accuracy:.3f},"
                f" domain {lex.domain_accuracy:.3f})"
            )
    lines += ["", "per-class recall (held-out)"]
    lines += [f"  {domain.value:<22} {recall:.2f}" for domain, recall in report.recall.items()]
    lines += ["", "confusion matrix (rows: truth, columns: predicted)"]
    lines.append("      " + " ".join(f"{_SHORT[d]:>3}" for d in Domain))
    for domain, row in zip(Domain, report.confusion, strict=True):
        lines.append(f"  {_SHORT[domain]} " + " ".join(f"{n:>3}" for n in row))
    lines += ["", "calibration (held-out): confidence bin, count, mean confidence, accuracy"]
    for low, high, count, confidence, accuracy in report.reliability:
        lines.append(f"  [{low:.1f}, {high:.1f})  {count:>4}  {confidence:.3f}  {accuracy:.3f}")
    lines.append(f"  expected calibration error {report.ece:.3f}")
    lines += ["", "triage threshold (held-out): threshold, share routed, accuracy of routed"]
    for threshold, share, accuracy in report.thresholds:
        lines.append(f"  {threshold:.2f}  {share:.2f}  {accuracy:.3f}")
    if report.recommended_threshold is not None:
        lines.append(
            f"  recommended: {report.recommended_threshold:.2f} (lowest confidence from which"
            f" every reliability bin is >= {MIN_BIN_ACCURACY:.0%} right)"
        )
    return "\n".join(lines)

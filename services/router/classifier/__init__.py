"""The trained job classifier: a hand-written corpus, a linear model, its evaluation.

- ``corpus/<domain>.jsonl``: the labelled training corpus (one ``{"text", "tier", "domain"}`` per
  line), written by hand; ``wild.jsonl``: texts phrased unlike the corpus, never trained on.
- :mod:`.corpus`: loading and validating examples, the corpus digest.
- :mod:`.model`: training (scikit-learn) and the fast linear scorer used at run time.
- :mod:`.trained`: :class:`~.trained.TrainedClassifier`, the model behind the
  :class:`~services.router.domain.classifier.Classifier` protocol.
- :mod:`.store`: the artefact cache in the data folder, keyed by the corpus digest.
- :mod:`.evaluation`: held-out split, cross-validation, calibration, the printed report.
"""

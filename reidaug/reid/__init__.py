"""Re-ID evaluation with torchreid: our Market dataset, engines (softmax, triplet, circle), evaluator, weights.

torchreid 0.2.5 (PyPI) is upstream torchreid 1.4.0 nested under `torchreid.reid`; every fix it needs lives here
as a subclass or a wrapper, never as a patch of the installed package. `reid_eval` (run.py) is the API.
"""

"""Torch-free contracts: the shapes that cross a layer (API ⇄ job store ⇄ worker ⇄ engine).

Pydantic and the standard library only (numpy for the samples array file), so the API process,
which never imports torch, validates requests, records and artifacts with the very definitions
the engine builds from. One definition per concept:

- `classifier`: `ClassifierSpec`, what a user declares about an uploaded classifier, its limits,
  and `ClassifierRejected`, the refusal users see verbatim;
- `inversion`: the method names, `LossWeights`, `InversionConfig` (the engine's whole run
  configuration, with each method's defaults) and `InversionParams` (the choices a user makes:
  the API's job body, the job record's `params`, the options of `c3 invert`);
- `artifacts`: the files a run leaves (samples.json, samples.npz, metrics.json, report.json)
  and the progress it reports;
- `errors`: one readable line from a pydantic validation error.

`tests/test_boundaries.py` proves that importing this package imports no torch.
"""

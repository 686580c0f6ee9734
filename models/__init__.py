"""The inversion engine of C3: classifiers in, Confidently Classified Counterfeits out.

Modules: `spec` (what a user declares), `architectures` (registered nets for safetensors),
`loading` (bytes → frozen `LoadedClassifier`, refusals), `onnx` (ONNX interpreter package),
`generator`, `losses`, `config` (`InversionConfig`, `LossWeights`), `methods` (c3, soft, pixel),
`training` (loop, checkpoints), `scoring` / `metrics` (audit figures), `images` (PNG, grids),
`device`, `digits` (demo data), `comparison` (method tables), `cli` (`c3 invert`, `c3 demo`).

No environment variables, no network, no web or queue code: typed configs and tensors in,
tensors, named figures and state dicts out.
"""

"""How one image becomes an HTTP request for a serving API, and how the answer becomes a prediction.

Encoders and decoders are pure functions of bytes, so the contract tests, the robustness
suite and the load generator all send exactly the same requests.
"""

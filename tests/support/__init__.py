"""What the tests share: a real node process (node_process), real peers (orthanc, peers, sender),
inputs made by the tests (corpus, series, phantoms, onnx_models, results, tls) and the
validators of STANDARDS.md (validators)."""

"""Artifact formats shared by the exporter and the runtime, free of torch and onnx.

* ``onnx_meta``: the ``tdmi.*`` ONNX metadata keys and their parsing;
* ``sidecar``: the engine sidecar (``model.engine.json``) and its checks against a machine;
* ``split``: the file names of a split (backbone + head) export.
"""
